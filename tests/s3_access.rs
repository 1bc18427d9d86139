//! Access control and CORS through real clients (issue 15): boto3 signed
//! by the bucket's owner key, by a second key without grants, and
//! unsigned; preflights and cross-origin requests as a browser sends them
//! (urllib). The checks live in tests/s3_access.py.

mod common;

use common::Cluster;

#[test]
fn boto3_access_control_and_cors() {
    let mut c = Cluster::start(6);
    let endpoint = c.start_s3();
    let owner = c.json(&["key", "create", "owner", "--json"]);
    let other = c.json(&["key", "create", "other", "--json"]);
    common::python_checks(
        "s3_access.py",
        &[
            &endpoint,
            owner["access_key"].as_str().unwrap(),
            owner["secret_key"].as_str().unwrap(),
            other["access_key"].as_str().unwrap(),
            other["secret_key"].as_str().unwrap(),
        ],
        "access: all checks passed",
    );
    common::assert_no_error_lines(&c.path("s3.log"));
}
