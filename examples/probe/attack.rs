//! The slow-client attack on a webhook server's connection cap, shared by the probes and the tests:
//! clients that trickle a TLS record header, one byte every 200 ms, from an address other than the
//! apiserver's (a pod in the seed), reconnecting the moment the server closes them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The attackers' address: any of 127.0.0.0/8 is this host, and the apiserver uses 127.0.0.1.
pub const POD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// A TCP connection from a given local address.
pub async fn connect_from(local: IpAddr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = match local {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(to).await
}

/// Starts `n` trickling clients against `to` until `stop` is set; `connects` counts their
/// connections.
pub fn tricklers(
    n: usize,
    to: SocketAddr,
    stop: Arc<AtomicBool>,
    connects: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (stop, connects) = (stop.clone(), connects.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(s) = connect_from(POD, to).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    connects.fetch_add(1, Ordering::Relaxed);
                    let (mut r, mut w) = s.into_split();
                    let mut closed = [0u8; 1];
                    for b in [0x16u8, 0x03, 0x01, 0x02, 0x00].iter().cycle() {
                        if stop.load(Ordering::Relaxed) || w.write_all(&[*b]).await.is_err() {
                            break;
                        }
                        tokio::select! {
                            // the server never answers a partial record: anything here is the close
                            _ = r.read(&mut closed) => break,
                            () = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                    }
                }
            })
        })
        .collect()
}
