//! The pusher's configuration through the public API: the reports URL built from the base
//! URL, and the up-front check that refuses weak keys, unsendable key ids and unreadable CA
//! files without ever printing the key.

use vantage_agent::push::{PushConfig, PushError};

#[test]
fn reports_url_joins_the_base_path() {
    let url = |base: &str| {
        PushConfig::new(base.parse().unwrap(), "k", vec![0; 16])
            .reports_url()
            .map(|u| u.to_string())
    };
    assert_eq!(
        url("https://agg.example.com").unwrap(),
        "https://agg.example.com/v1/reports"
    );
    assert_eq!(
        url("http://127.0.0.1:8080/vantage/").unwrap(),
        "http://127.0.0.1:8080/vantage/v1/reports"
    );
    assert!(url("ftp://agg.example.com").is_err());
    assert!(url("/relative").is_err());
    assert!(url("https://agg.example.com/?x=1").is_err());
}

#[test]
fn check_catches_weak_keys_and_bad_key_ids() {
    let ok = PushConfig::new("https://a.example".parse().unwrap(), "k1", vec![7; 32]);
    ok.check().unwrap();
    let mut weak = ok.clone();
    weak.key = vec![1; 8];
    assert!(matches!(weak.check(), Err(PushError::Key(_))));
    let mut bad_id = ok.clone();
    bad_id.key_id = "k\n1".into();
    assert!(matches!(bad_id.check(), Err(PushError::KeyId(_))));
    let mut bad_ca = ok;
    bad_ca.ca_file = Some("/nonexistent/ca.pem".into());
    assert!(matches!(bad_ca.check(), Err(PushError::Tls(_))));
    assert!(
        !format!("{bad_ca:?}").contains("7, 7"),
        "key must not be printed"
    );
}
