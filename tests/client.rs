//! nsguard's Kubernetes client turns Nagle's algorithm off on its connections (`TCP_NODELAY`),
//! where kube's own builder leaves it on (`src/ops/client.rs` says why). No cluster needed: a local
//! TCP server answers the request, and the test reads the option off the client's own socket.

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use kube::{Client, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A server that answers every request with `{}`, and names each connection's peer (the client's
/// end) as it accepts it.
async fn server() -> (SocketAddr, mpsc::UnboundedReceiver<SocketAddr>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (peers, accepted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            let _ = peers.send(peer);
            tokio::spawn(async move {
                let (mut read, mut chunk) = (Vec::new(), [0_u8; 4096]);
                while let Ok(n @ 1..) = stream.read(&mut chunk).await {
                    read.extend_from_slice(&chunk[..n]);
                    // Requests without a body: each ends with its headers.
                    while let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                        read.drain(..end + 4);
                        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// `TCP_NODELAY` on this process's socket from `local` to `peer`.
fn nodelay_at(local: SocketAddr, peer: SocketAddr) -> bool {
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let Ok(fd) = entry.expect("an fd").file_name().to_string_lossy().parse::<i32>() else { continue };
        // SAFETY: only read from (getsockname, getpeername, getsockopt), never closed. The socket
        // sought is held open by the caller's client; any other fd (closed, or its number reused
        // meanwhile) at worst answers with an error or an address that does not match.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let (Ok(at), Ok(to)) = (socket.local_addr(), socket.peer_addr()) else { continue };
        if at.as_socket() == Some(local) && to.as_socket() == Some(peer) {
            return socket.tcp_nodelay().expect("TCP_NODELAY of the client's socket");
        }
    }
    panic!("no socket of this process from {local} to {peer}");
}

/// Whether a client from `build` sends its requests with `TCP_NODELAY` on.
async fn nodelay_of(build: impl FnOnce(Config) -> Client) -> bool {
    let (addr, mut accepted) = server().await;
    let mut config = Config::new(format!("http://{addr}").parse().expect("URL"));
    // Plain HTTP: no CA needed, and none looked for on the machine.
    config.root_cert = Some(Vec::new());
    let client = build(config);
    let request = http::Request::get("/version").body(Vec::new()).expect("request");
    assert_eq!(client.request_text(request).await.expect("answered"), "{}");
    let client_end = accepted.recv().await.expect("a connection");
    // The client keeps the connection in its pool, open, while it lives.
    let nodelay = nodelay_at(client_end, addr);
    drop(client);
    nodelay
}

#[tokio::test]
async fn nsguards_client_turns_nagle_off() {
    assert!(nodelay_of(|config| nsguard::ops::client::build(config).expect("client")).await);
}

/// Why `src/ops/client.rs` exists: when this fails, kube's own builder sets `TCP_NODELAY` and
/// nsguard can use it again.
#[tokio::test]
async fn kubes_own_builder_leaves_nagle_on() {
    assert!(!nodelay_of(|config| Client::try_from(config).expect("client")).await);
}
