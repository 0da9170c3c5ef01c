//! The site's bundles as a browser gets them: precompressed, cached for good under
//! their hashed names, linked by those names from every page.
//!
//! A binary of its own: Leptos works out the hashed names once per process, at the
//! first page it renders, so a page rendered earlier by another test (with another
//! site folder) would decide them.

mod support;

use support::{
    databases::TestDb,
    server::{relaxed, TestServer},
};

/// The bundles go out as built: brotli or gzip to a browser that takes it, plain
/// otherwise; named by their content's hash (as the page links them) they may be
/// cached for good, while pages are asked for again every time.
#[tokio::test]
async fn bundles_are_sent_precompressed_and_cached_by_their_hashed_names() {
    let site = tempfile::tempdir().unwrap();
    let pkg = site.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(site.path().join("hash.txt"), "js: h4sh\nwasm: h4sh\ncss: h4sh\n").unwrap();
    std::fs::write(pkg.join("parley.h4sh.js"), "plain").unwrap();
    std::fs::write(pkg.join("parley.h4sh.js.br"), "brotli bytes").unwrap();
    std::fs::write(pkg.join("parley.h4sh.js.gz"), "gzip bytes").unwrap();
    let root = site.path().to_string_lossy().to_string();
    let mut config = relaxed();
    config.site.root = root;
    let server = TestServer::start_with(TestDb::sqlite().await, config).await;

    let fetch = |path: &'static str, encodings: &'static str| {
        let url = server.url(path);
        async move { TestServer::http_client().get(url).header("accept-encoding", encodings).send().await.unwrap() }
    };
    for (encodings, encoding, body) in [("br, gzip", Some("br"), "brotli bytes"), ("gzip", Some("gzip"), "gzip bytes"), ("identity", None, "plain")] {
        let response = fetch("/pkg/parley.h4sh.js", encodings).await;
        assert_eq!(response.status(), 200, "{encodings}");
        assert_eq!(response.headers().get("content-encoding").map(|v| v.to_str().unwrap()), encoding, "{encodings}");
        assert_eq!(response.headers()["cache-control"], "public, max-age=31536000, immutable");
        assert_eq!(response.text().await.unwrap(), body);
    }
    let missing = fetch("/pkg/parley.0ld.js", "br").await;
    assert_eq!(missing.status(), 404);
    assert_ne!(missing.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("public, max-age=31536000, immutable"));

    let page = fetch("/login", "br, gzip").await;
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    for linked in ["/pkg/parley.h4sh.css", "/pkg/parley.h4sh.js", "/pkg/parley.h4sh.wasm"] {
        assert!(html.contains(linked), "the page links {linked}: {html}");
    }
    server.stop().await;
}
