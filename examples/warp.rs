//! A warp 0.4 app wrapped by the upload layer: warp's filters keep their routes, uploads live
//! under `/files`.
//!
//! ```text
//! cargo run --example warp
//! curl -X PUT localhost:3002/files/a.txt -H 'Authorization: Bearer demo-key' -d 'hi'
//! curl localhost:3002/files/a.txt; curl localhost:3002/hello
//! ```

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower_layer::Layer;
use tower_uploads::{MemoryStorage, Uploads};
use warp::Filter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let routes = warp::path("hello")
        .map(|| String::from("hello from warp"))
        .boxed();
    let layer = Uploads::new(MemoryStorage::new())
        .key("demo-key")
        .prefix("/files")
        .base_url("http://127.0.0.1:3002/files")
        .layer();
    // warp's filters as a tower service, under the upload layer.
    let service = layer.layer(warp::service(routes));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3002").await?;
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
