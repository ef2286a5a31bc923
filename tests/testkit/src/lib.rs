//! Test fixtures shared by the test suites (a dev-dependency only).
//!
//! [`Slapd`]: a throwaway OpenLDAP server (Debian's `slapd` + `ldap-utils`) on free ports of
//! 127.0.0.1, with LDAP+StartTLS and LDAPS under a freshly generated certificate for `localhost`,
//! loaded with [`fixture`]: a service account, one user per role group, a user in two groups, a user
//! in no group, a disabled user (ppolicy lock) and the groups. Tests call [`Slapd::start`] and print
//! `SKIP:` when it returns [`Unavailable`].

pub mod fixture;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use fixture::*;

const SLAPD: &str = "/usr/sbin/slapd";
const MODULE_DIR: &str = "/usr/lib/ldap";
const SCHEMA_DIR: &str = "/etc/ldap/schema";

/// Why a slapd cannot be started here (the test prints it after `SKIP:`).
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A running throwaway slapd; stopped (and its files removed) on drop.
#[derive(Debug)]
pub struct Slapd {
    child: Child,
    dir: tempfile::TempDir,
    /// Port of `ldap://` (plain, for StartTLS).
    pub ldap_port: u16,
    /// Port of `ldaps://`.
    pub ldaps_port: u16,
    /// PEM of the server certificate (self-signed, names `localhost` only): the CA to trust.
    pub ca_pem: String,
}

impl Slapd {
    /// Whether slapd, its modules and `ldapadd` are installed.
    pub fn check_installed() -> Result<(), Unavailable> {
        for (path, package) in [
            (SLAPD, "slapd"),
            ("/usr/lib/ldap/back_mdb.la", "slapd"),
            ("/usr/lib/ldap/ppolicy.la", "slapd"),
            ("/usr/bin/ldapadd", "ldap-utils"),
        ] {
            if !Path::new(path).exists() {
                return Err(Unavailable(format!(
                    "{path} is missing (install the Debian package {package}: apt-get install slapd ldap-utils)"
                )));
            }
        }
        Ok(())
    }

    /// Start a slapd loaded with [`fixture::LDIF`]. Retries on a port race.
    pub fn start() -> Result<Self, Unavailable> {
        Self::check_installed()?;
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(Unavailable(format!("slapd did not start: {last}")))
    }

    fn try_start() -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let cert = certs::generate_tls_server_certificate(&["localhost".to_owned()], 2)
            .map_err(|e| e.to_string())?;
        let cert_path = dir.path().join("server.pem");
        let key_path = dir.path().join("server.key");
        std::fs::write(&cert_path, &cert.cert_pem).map_err(|e| e.to_string())?;
        std::fs::write(&key_path, cert.key_pem.as_bytes()).map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|e| e.to_string())?;
        let conf = dir.path().join("slapd.conf");
        std::fs::write(&conf, slapd_conf(dir.path(), &cert_path, &key_path, &data))
            .map_err(|e| e.to_string())?;
        let (ldap_port, ldaps_port) = (free_port()?, free_port()?);
        let urls = format!("ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/");
        // -d 0 keeps slapd in the foreground (a child we can kill) without debug output.
        let child = Command::new(SLAPD)
            .args(["-d", "0", "-f"])
            .arg(&conf)
            .args(["-h", &urls])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {SLAPD}: {e}"))?;
        let mut slapd = Self {
            child,
            dir,
            ldap_port,
            ldaps_port,
            ca_pem: cert.cert_pem,
        };
        slapd.wait_listening()?;
        slapd.ldapadd(&LDIF)?;
        Ok(slapd)
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!("slapd exited with {status}: {err}"));
            }
            let up = [self.ldap_port, self.ldaps_port].iter().all(|p| {
                TcpStream::connect_timeout(&([127, 0, 0, 1], *p).into(), Duration::from_millis(200))
                    .is_ok()
            });
            if up {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("slapd is not listening after 15 s".into())
    }

    /// Add entries (LDIF) as the directory's root account.
    pub fn ldapadd(&self, ldif: &str) -> Result<(), String> {
        self.ldap_tool("ldapadd", ldif)
    }

    /// Modify entries (LDIF with `changetype: modify`) as the directory's root account.
    pub fn ldapmodify(&self, ldif: &str) -> Result<(), String> {
        self.ldap_tool("ldapmodify", ldif)
    }

    fn ldap_tool(&self, tool: &str, ldif: &str) -> Result<(), String> {
        let mut child = Command::new(tool)
            .args(["-x", "-H", &format!("ldap://127.0.0.1:{}/", self.ldap_port)])
            .args(["-D", ROOT_DN, "-w", ROOT_PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {tool}: {e}"))?;
        child
            .stdin
            .take()
            .ok_or("no stdin")?
            .write_all(ldif.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "{tool} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// `ldaps://localhost:PORT` (the name the certificate carries).
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://localhost:{}", self.ldaps_port)
    }

    /// `ldap://localhost:PORT`, for StartTLS.
    pub fn ldap_url(&self) -> String {
        format!("ldap://localhost:{}", self.ldap_port)
    }

    /// The temporary directory holding the server's files.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 right now (the OS picks it).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn slapd_conf(dir: &Path, cert: &Path, key: &Path, data: &Path) -> String {
    format!(
        r#"include {SCHEMA_DIR}/core.schema
include {SCHEMA_DIR}/cosine.schema
include {SCHEMA_DIR}/inetorgperson.schema
include {SCHEMA_DIR}/nis.schema
modulepath {MODULE_DIR}
moduleload back_mdb
moduleload ppolicy
moduleload memberof
pidfile {pid}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
database mdb
maxsize 10485760
suffix "{BASE_DN}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {data}
overlay memberof
overlay ppolicy
ppolicy_default "{POLICY_DN}"
access to attrs=userPassword by anonymous auth by self write by * none
access to * by users read by * none
"#,
        pid = dir.join("slapd.pid").display(),
        cert = cert.display(),
        key = key.display(),
        data = data.display(),
    )
}
