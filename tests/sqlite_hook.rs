//! The SQLite example (`examples/sqlite.rs`): its hooks keep one row per published file in
//! the app's own database, and refuse uploads under `readonly/`.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// id, folder, filename, kind, filesize, metadata.
type Row = (String, Option<String>, String, String, i64, Option<String>);

struct App {
    child: std::process::Child,
    base: String,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &std::path::Path, db: &std::path::Path) -> App {
    let mut child = Command::new(example_binary("sqlite"))
        .args(["--listen", "127.0.0.1:0", "--key", KEY])
        .arg("--data")
        .arg(data)
        .arg("--db")
        .arg(db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the sqlite example");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("a line");
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    App {
        child,
        base: format!("http://{addr}"),
    }
}

#[tokio::test]
async fn the_hooks_keep_a_row_per_file() {
    let (sandbox, root) = sandbox();
    let db = sandbox.path().join("files.db");
    let app = start(&root, &db);
    let put = |path: &str, body: Vec<u8>| {
        client()
            .put(format!("{}/files/{path}", app.base))
            .header("authorization", format!("Bearer {KEY}"))
            .body(body)
            .send()
    };
    let (s, _, a) = json(put("pics/a.png", tiny_png(5, 3)).await.unwrap()).await;
    assert_eq!(s, 201, "{a}");
    let (s, _, b) = json(put("notes/b.txt", b"hello".to_vec()).await.unwrap()).await;
    assert_eq!(s, 201, "{b}");
    let (s, _, r) = json(put("readonly/c.txt", b"no".to_vec()).await.unwrap()).await;
    assert_eq!((s, kind(&r)), (403, Some("upload_rejected")), "{r}");
    // A session upload lands in the table too, with the session's metadata.
    let (_, _, sess) = json(
        client()
            .post(format!("{}/files/uploads", app.base))
            .header("authorization", format!("Bearer {KEY}"))
            .body(json!({"metadata": {"user_id": "u1"}}).to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    let url = sess["data"]["url"]
        .as_str()
        .expect("session url")
        .to_owned();
    let body = b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.bin\"\r\n\r\nDDDD\r\n--x--\r\n".to_vec();
    let (s, _, d) = json(
        client()
            .post(&url)
            .header("content-type", "multipart/form-data")
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{d}");

    // The rows, read with SQLite itself.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT id, folder, filename, kind, filesize, metadata FROM files ORDER BY filename",
        )
        .unwrap();
    let rows: Vec<Row> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let a_row = &rows[0];
    assert_eq!(a_row.0, data(&a)["id"].as_str().unwrap());
    assert_eq!(
        (
            a_row.1.as_deref(),
            a_row.2.as_str(),
            a_row.3.as_str(),
            a_row.4
        ),
        (Some("pics"), "a.png", "image", tiny_png(5, 3).len() as i64)
    );
    let meta: Value = serde_json::from_str(a_row.5.as_deref().unwrap()).unwrap();
    assert_eq!(meta, json!({"stored_by": "sqlite-example"}));
    assert_eq!(rows[1].2, "b.txt");
    assert_eq!(
        rows[2].2, "original",
        "session files live at <media id>/original"
    );
    let meta: Value = serde_json::from_str(rows[2].5.as_deref().unwrap()).unwrap();
    assert_eq!(
        meta,
        json!({"user_id": "u1", "stored_by": "sqlite-example"})
    );
    assert!(
        !rows.iter().any(|r| r.2 == "c.txt"),
        "the rejected file has no row"
    );
    assert!(!root.join("readonly").exists());

    // The app serves what it knows.
    let (s, _, list) = json(
        client()
            .get(format!("{}/app/files", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(list["files"].as_array().map(Vec::len), Some(3), "{list}");
}
