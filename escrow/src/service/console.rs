//! Reads the web console needs beyond the API's: one device by id.

use super::{EscrowService, require_role};
use crate::error::EscrowError;
use crate::model::{Actor, DeviceInfo, Role};
use crate::store::devices;

impl EscrowService {
    /// One device (revoked ones too), for its page.
    pub async fn device_by_id(&self, actor: &Actor, id: i64) -> Result<DeviceInfo, EscrowError> {
        require_role(actor, &[Role::Admin, Role::Auditor], "view devices")?;
        devices::by_id(&mut *self.inner.db.conn().await?, id)
            .await?
            .ok_or_else(|| EscrowError::NotFound(format!("no device with id {id}")))
    }
}
