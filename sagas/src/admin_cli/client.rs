//! HTTP calls to the admin API. Paths are given as segments, each percent-encoded on its
//! own, so that a business key holding `/`, `?` or `#` stays one segment.

use std::time::Duration;

use anyhow::{anyhow, Context};
use reqwest::Url;
use serde_json::Value;

/// A client of one admin API.
pub struct AdminClient {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl AdminClient {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, token: Option<&str>) -> anyhow::Result<Self> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(anyhow!(
                "--admin-url `{base}` must start with http:// or https://"
            ));
        }
        let parsed = Url::parse(base).with_context(|| format!("--admin-url `{base}`"))?;
        if parsed.cannot_be_a_base() {
            return Err(anyhow!("--admin-url `{base}` cannot take a path"));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .context("building the HTTP client")?;
        Ok(AdminClient {
            http,
            base: parsed,
            token: token.map(str::to_string),
        })
    }

    /// `GET /segments…?query`.
    pub async fn get(&self, path: &[&str], query: &[(&str, String)]) -> anyhow::Result<Value> {
        let request = self.http.get(self.url(path)?).query(query);
        self.send(request).await
    }

    /// `POST /segments…` with a JSON body.
    pub async fn post(
        &self,
        path: &[&str],
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.post(self.url(path)?).json(body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request).await
    }

    /// `DELETE /segments…` with a JSON body.
    pub async fn delete(&self, path: &[&str], body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.delete(self.url(path)?).json(body))
            .await
    }

    /// The base URL with `segments` appended, each percent-encoded. An empty, `.` or `..`
    /// segment is refused: URL parsing would drop or resolve it, and so change the route.
    fn url(&self, segments: &[&str]) -> anyhow::Result<Url> {
        if let Some(bad) = segments
            .iter()
            .find(|s| s.is_empty() || **s == "." || **s == "..")
        {
            return Err(anyhow!(
                "`{bad}` cannot be sent as one segment of a URL path"
            ));
        }
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in new: the base URL takes a path")
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|error| {
            anyhow!(
                "the admin API at {} does not answer ({}); is `sagas run` up?",
                self.base,
                root_cause(&error)
            )
        })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let detail = body["detail"].as_str().unwrap_or("no detail");
        Err(anyhow!("the admin API answered {status}: {detail}"))
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_segment_is_encoded_on_its_own() {
        for base in ["http://127.0.0.1:8080", "http://127.0.0.1:8080/"] {
            let client = AdminClient::new(base, None).unwrap();
            let url = client
                .url(&["v1", "definitions", "checkout", "sagas", "a/b?c#d %"])
                .unwrap();
            assert_eq!(
                url.as_str(),
                "http://127.0.0.1:8080/v1/definitions/checkout/sagas/a%2Fb%3Fc%23d%20%25"
            );
        }
        let behind_a_prefix = AdminClient::new("https://ops.example/sagas/", None).unwrap();
        assert_eq!(
            behind_a_prefix.url(&["v1", "stats"]).unwrap().as_str(),
            "https://ops.example/sagas/v1/stats"
        );
        for bad in ["", ".", ".."] {
            let client = AdminClient::new("http://127.0.0.1:8080", None).unwrap();
            assert!(client.url(&["v1", "sagas", bad]).is_err(), "{bad:?}");
        }
    }
}
