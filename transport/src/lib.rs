//! QUIC transport between Basalt stores (quinn, rustls, mutual TLS): batched Raft messages, snapshot streams and the client protocol. Not built yet: see the running-cluster issue.
