//! tower-uploads on plain hyper 1, with nothing else.
//!
//! ```text
//! cargo run --example hyper
//! ```

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower_uploads::{MemoryStorage, Uploads};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let service = Uploads::new(MemoryStorage::new())
        .key("demo-key")
        .base_url("http://127.0.0.1:3001")
        .service();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
