//! The one set of limits of the escrow contract. The service validates requests against these once;
//! the API, the OpenAPI document, `docs/api.md` and `docs/agent-guide.md` state the same numbers
//! (the Windows agent splits its batches by them).

/// Most recovery protectors in one `POST /agent/escrow` call.
pub const MAX_PROTECTORS_PER_ESCROW: usize = 64;
/// Largest BitLocker key package stored (bytes, before base64).
pub const MAX_KEY_PACKAGE_BYTES: usize = 64 * 1024;
/// Default of `escrow.max_body_bytes`: the largest request body (413 beyond it).
pub const DEFAULT_MAX_BODY_BYTES: usize = 262_144;
/// Most protectors listed in one check-in.
pub const MAX_CHECKIN_ENTRIES: usize = 1024;
/// Longest mount point kept (Windows MAX_PATH).
pub const MAX_MOUNT_POINT_CHARS: usize = 260;
/// Longest legacy TPM owner authorisation.
pub const MAX_TPM_OWNER_AUTH_CHARS: usize = 1024;
/// Items per page of a list when the request does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Most items per page of a list (`limit`).
pub const MAX_PAGE_SIZE: u32 = 1000;
