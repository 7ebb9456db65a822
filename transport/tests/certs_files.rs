//! Proves the certificate tooling behind `basalt certs`: `write_cert_dir` writes the CA and
//! per-name certificates and keys (keys 0600), a second run reuses the CA found in the
//! directory (old and new certificates chain to one CA, so they talk), and `TlsConfig` loads
//! every file back.
#![cfg(feature = "server")]

mod fixture;

use std::os::unix::fs::PermissionsExt;

use transport::certs::{read_ca, write_cert_dir, NodeCertSpec};
use transport::proto::{Request, Response};
use transport::server::ResponseSender;
use transport::{ClientConnection, ClientService, TlsConfig, TransportConfig};

struct Ok_;

impl ClientService for Ok_ {
    fn call(&self, _store_id: u64, _request: Request, reply: ResponseSender) {
        reply(Response::AdminDone);
    }
}

#[test]
fn cert_dir_is_written_reused_and_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |name: &str| NodeCertSpec {
        name: name.into(),
        sans: vec!["127.0.0.1".into()],
    };
    let ca1 = write_cert_dir(dir.path(), "test-ca", &[spec("n1")], &["ctl".into()]).unwrap();
    for f in ["ca.pem", "ca.key", "n1.pem", "n1.key", "ctl.pem", "ctl.key"] {
        assert!(dir.path().join(f).is_file(), "{f} written");
    }
    for f in ["ca.key", "n1.key", "ctl.key"] {
        let mode = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f} is private");
    }
    // A second run adds a client under the same CA.
    let ca2 = write_cert_dir(dir.path(), "ignored", &[], &["late".into()]).unwrap();
    assert_eq!(ca1.cert_pem(), ca2.cert_pem());
    assert_eq!(read_ca(dir.path()).unwrap().cert_pem(), ca1.cert_pem());

    let n = fixture::node(
        &TlsConfig::from_dir(dir.path(), "n1").unwrap(),
        TransportConfig::default(),
    );
    n.set_client_service(std::sync::Arc::new(Ok_));
    let addr = n.local_addr().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for client in ["ctl", "late"] {
            let tls = TlsConfig::from_dir(dir.path(), client).unwrap();
            let c = ClientConnection::connect(addr, &tls).await.unwrap();
            let r = c
                .call(0, &Request::Status, std::time::Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(r, Response::AdminDone);
        }
        // Verification by name: the node certificate lists 127.0.0.1, not "elsewhere".
        let wrong = TlsConfig::from_dir(dir.path(), "ctl")
            .unwrap()
            .with_server_name("elsewhere");
        assert!(ClientConnection::connect(addr, &wrong).await.is_err());
    });
    n.shutdown();
}
