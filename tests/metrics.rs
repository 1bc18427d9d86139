//! Meta and nodes export Prometheus metrics over HTTP.

mod common;

use common::{Cluster, http_get, metric, random_file};

#[test]
fn meta_and_nodes_export_prometheus_metrics() {
    let c = Cluster::start(6);
    c.ok(&["bucket", "create", "data"]);
    let src = c.path("src");
    random_file(&src, 5 << 20, 3);
    c.ok(&["put", src.to_str().unwrap(), "data/obj"]);
    c.fails(&["put", src.to_str().unwrap(), "nobucket/obj"]);

    let (status, body) = http_get(c.metrics_addr(None), "/metrics");
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        metric(&body, "tessera_meta_nodes{state=\"up\"}"),
        Some(6.0),
        "{body}"
    );
    assert_eq!(metric(&body, "tessera_meta_objects"), Some(1.0));
    assert_eq!(metric(&body, "tessera_meta_chunks"), Some(2.0));
    assert!(metric(&body, "tessera_meta_requests_refused_total").unwrap() >= 1.0);

    // Every node holds one fragment of each of the two chunks (ec:4+2 on six nodes).
    let mut puts = 0.0;
    for i in 0..6 {
        let (status, body) = http_get(c.metrics_addr(Some(i)), "/metrics");
        assert!(status.contains("200"), "{status}");
        let id = c.node_id(i);
        puts += metric(
            &body,
            &format!("tessera_node_fragment_puts_total{{node=\"{id}\"}}"),
        )
        .unwrap();
        assert_eq!(
            metric(&body, &format!("tessera_node_fragments{{node=\"{id}\"}}")),
            Some(2.0),
            "{body}"
        );
        let direct = metric(&body, &format!("tessera_node_direct_io{{node=\"{id}\"}}"));
        assert!(matches!(direct, Some(v) if v == 0.0 || v == 1.0), "{body}");
    }
    assert_eq!(puts, 12.0);
    let (status, body) = http_get(c.metrics_addr(None), "/health");
    assert!(status.contains("200") && body.trim() == "ok");
}
