//! The yardstick: what one proxied request costs on Gatehouse's stack before any gateway
//! feature. One worker thread per core with its own `current_thread` runtime and its own
//! SO_REUSEPORT listening socket; per-thread pools of HTTP/1 client connections;
//! round-robin over the upstreams; hop-by-hop headers dropped and `X-Forwarded-For` added.
//! Nothing else: no routing, no timeouts, no retries, no logs.
//!
//! Usage: `yardstick LISTEN WORKERS UPSTREAM [UPSTREAM ...]`

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Sender = SendRequest<Incoming>;

/// The worker's idle connections, one list per upstream.
struct Pool {
    upstreams: Vec<SocketAddr>,
    idle: RefCell<Vec<Vec<Sender>>>,
    next: Cell<usize>,
}

/// The upstream response body; gives its connection back to the pool at its end.
struct Returning {
    inner: Incoming,
    back: Option<(Rc<Pool>, usize, Sender)>,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some((pool, i, sender)) = self.back.take() {
            pool.idle.borrow_mut()[i].push(sender);
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ if self.inner.is_end_stream() => self.give_back(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
}

async fn sender(pool: &Rc<Pool>, i: usize) -> std::io::Result<Sender> {
    loop {
        let idle = pool.idle.borrow_mut()[i].pop();
        match idle {
            Some(mut s) if !s.is_closed() => {
                if s.ready().await.is_ok() {
                    return Ok(s);
                }
            }
            Some(_) => continue,
            None => break,
        }
    }
    let stream = tokio::net::TcpStream::connect(pool.upstreams[i]).await?;
    stream.set_nodelay(true)?;
    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::task::spawn_local(conn);
    Ok(s)
}

async fn forward(
    pool: Rc<Pool>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Returning>, std::io::Error> {
    let i = pool.next.get() % pool.upstreams.len();
    pool.next.set(i + 1);
    strip_hop_by_hop(req.headers_mut());
    // Upstream connections are kept alive whatever the client spoke (ab speaks 1.0).
    *req.version_mut() = hyper::Version::HTTP_11;
    let xff = HeaderName::from_static("x-forwarded-for");
    let client = HeaderValue::from_str(&peer.ip().to_string()).map_err(std::io::Error::other)?;
    req.headers_mut().append(xff, client);
    let mut s = sender(&pool, i).await?;
    let mut resp = s.send_request(req).await.map_err(std::io::Error::other)?;
    strip_hop_by_hop(resp.headers_mut());
    Ok(resp.map(|inner| {
        let mut body = Returning {
            inner,
            back: Some((pool.clone(), i, s)),
        };
        if body.inner.is_end_stream() {
            body.give_back();
        }
        body
    }))
}

fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

fn worker(listen: SocketAddr, upstreams: Vec<SocketAddr>) -> std::io::Result<()> {
    let socket = listener(listen)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let pool = Rc::new(Pool {
        idle: RefCell::new(upstreams.iter().map(|_| Vec::new()).collect()),
        upstreams,
        next: Cell::new(0),
    });
    local.block_on(&rt, async move {
        let l = tokio::net::TcpListener::from_std(socket)?;
        loop {
            let (stream, peer) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            let pool = pool.clone();
            tokio::task::spawn_local(async move {
                let svc = service_fn(move |req| forward(pool.clone(), peer, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = (|| -> Option<(SocketAddr, usize, Vec<SocketAddr>)> {
        let listen = args.first()?.parse().ok()?;
        let workers = args.get(1)?.parse().ok()?;
        let ups: Option<Vec<SocketAddr>> = args[2..].iter().map(|a| a.parse().ok()).collect();
        Some((listen, workers, ups.filter(|u| !u.is_empty())?))
    })();
    let Some((listen, workers, upstreams)) = parsed else {
        eprintln!("usage: yardstick LISTEN WORKERS UPSTREAM [UPSTREAM ...]");
        std::process::exit(2);
    };
    let threads: Vec<_> = (0..workers.max(1))
        .map(|_| {
            let ups = upstreams.clone();
            std::thread::spawn(move || worker(listen, ups))
        })
        .collect();
    for t in threads {
        if let Ok(Err(e)) = t.join() {
            eprintln!("worker failed: {e}");
            std::process::exit(1);
        }
    }
}
