//! Host URLs: `host:port` with the configured protocol, full URLs, and
//! Elastic Cloud ids.

use base64::Engine;
use url::Url;

/// `es.example:9200`, `https://es.example`, `http://10.0.0.1:9201/prefix`.
pub(super) fn parse_host(host: &str, protocol: &str, path: Option<&str>) -> Result<Url, String> {
    let with_scheme = if host.contains("://") {
        host.to_owned()
    } else {
        format!("{protocol}://{host}")
    };
    let mut url =
        Url::parse(&with_scheme).map_err(|error| format!("`{host}` is not a host or URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{host}`: only http and https are supported"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{}`: put credentials in username/password, not in the URL",
            url.host_str().unwrap_or(host)
        ));
    }
    if url.port().is_none() && !host.contains("://") {
        let _ = url.set_port(Some(9200));
    }
    if let Some(prefix) = path {
        url.set_path(prefix);
    }
    if !url.path().ends_with('/') {
        let with_slash = format!("{}/", url.path());
        url.set_path(&with_slash);
    }
    Ok(url)
}

/// Decodes `label:base64(host$es_uuid$kibana_uuid)` into the Elasticsearch URL.
pub fn decode_cloud_id(cloud_id: &str) -> Result<Url, String> {
    let encoded = cloud_id.rsplit(':').next().unwrap_or(cloud_id);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| "not a valid cloud.id (the part after the last `:` must be base64)".to_owned())?;
    let mut parts = decoded.split('$');
    let (Some(host), Some(es_uuid)) = (parts.next(), parts.next()) else {
        return Err("not a valid cloud.id (expected host$es_uuid$kibana_uuid)".to_owned());
    };
    let (host, host_port) = split_port(host);
    let (es_uuid, uuid_port) = split_port(es_uuid);
    let port = uuid_port.or(host_port).unwrap_or("443");
    if host.is_empty() || es_uuid.is_empty() {
        return Err("not a valid cloud.id (empty host or Elasticsearch id)".to_owned());
    }
    Url::parse(&format!("https://{es_uuid}.{host}:{port}/"))
        .map_err(|error| format!("cloud.id gives a bad URL: {error}"))
}

fn split_port(text: &str) -> (&str, Option<&str>) {
    match text.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !port.is_empty() => {
            (name, Some(port))
        }
        _ => (text, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_id_decodes_like_libbeat() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("us-east-1.aws.found.io$es123$kb456");
        let url = decode_cloud_id(&format!("staging:{encoded}")).unwrap();
        assert_eq!(url.as_str(), "https://es123.us-east-1.aws.found.io/");
        let encoded = base64::engine::general_purpose::STANDARD.encode("example.com:9243$es$kb");
        assert_eq!(
            decode_cloud_id(&encoded).unwrap().as_str(),
            "https://es.example.com:9243/"
        );
        assert!(decode_cloud_id("x:!!!").is_err());
    }

    #[test]
    fn hosts_get_scheme_and_port() {
        assert_eq!(
            parse_host("es1", "https", None).unwrap().as_str(),
            "https://es1:9200/"
        );
        assert_eq!(
            parse_host("http://es1", "https", None).unwrap().as_str(),
            "http://es1/"
        );
        assert!(parse_host("http://user:pw@es1", "http", None)
            .unwrap_err()
            .contains("username/password"));
    }
}
