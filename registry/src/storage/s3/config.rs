//! `storage.s3` with the key names and meanings of distribution's config.yml
//! (../shared/specs/distribution-configuration.md, "storage" → `s3`), so a registry:2 config
//! works unchanged, plus three keys of our own for the retry policy (docs/REGISTRY.md).

use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use serde::Deserialize;

use super::part_copy::MAX_SINGLE_COPY;
use crate::config::go_duration;

/// S3 refuses multipart parts under 5 MiB except the last one.
pub const MIN_CHUNK_SIZE: u64 = 5 << 20;
/// distribution's default `chunksize`.
const DEFAULT_CHUNK_SIZE: u64 = 10 << 20;
/// Copies in parts (`multipartcopy*`, see part_copy.rs): distribution's part size and
/// concurrency. Its threshold is 32 MiB; ours is higher because a copy in parts costs at
/// least four requests where CopyObject is one: on moto a 256 MiB push of 32 MiB layers took
/// 6.2-6.7 s with copies in parts against 4.9-5.1 s with CopyObject. Over 256 MiB, parallel
/// parts are what makes a multi-GiB commit quick on AWS.
const DEFAULT_COPY_CHUNK_SIZE: u64 = 32 << 20;
const DEFAULT_COPY_THRESHOLD: u64 = 256 << 20;
const DEFAULT_COPY_CONCURRENCY: usize = 100;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct S3Config {
    /// Required, as in distribution: the bucket's AWS region (any value for most
    /// S3-compatible servers).
    pub region: String,
    /// An S3-compatible endpoint URL; empty means AWS's endpoint for `region`.
    pub regionendpoint: String,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted ones
    /// (`bucket.endpoint/key`); most S3-compatible servers need it.
    pub forcepathstyle: bool,
    pub bucket: String,
    /// Static credentials. When empty, object_store's chain is used: `AWS_*` environment
    /// variables, web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), ECS task
    /// credentials, then EC2 instance metadata.
    pub accesskey: String,
    pub secretkey: String,
    pub sessiontoken: String,
    /// A key prefix inside the bucket (distribution strips the leading `/` too).
    pub rootdirectory: String,
    /// The multipart part size for uploads; at least 5 MiB.
    pub chunksize: u64,
    /// Objects larger than this are copied in parts (UploadPartCopy) of this size, this many
    /// at a time; always those over 5 GiB, which one CopyObject refuses.
    pub multipartcopythresholdsize: u64,
    pub multipartcopychunksize: u64,
    pub multipartcopymaxconcurrency: usize,
    /// Server-side encryption: `AES256`, or KMS when `keyid` is set.
    pub encrypt: bool,
    pub keyid: String,
    /// `false` allows plain HTTP to the endpoint.
    pub secure: bool,
    /// Accept any TLS certificate from the endpoint.
    pub skipverify: bool,
    /// Ours: how many times a failed S3 request (5xx, timeout, broken connection) is retried.
    pub maxretries: usize,
    /// Ours: no retry starts later than this after the first attempt.
    #[serde(deserialize_with = "go_duration")]
    pub retrytimeout: Duration,
    /// Ours: one S3 request (headers and body) taking longer than this has failed.
    #[serde(deserialize_with = "go_duration")]
    pub requesttimeout: Duration,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            region: String::new(),
            regionendpoint: String::new(),
            forcepathstyle: false,
            bucket: String::new(),
            accesskey: String::new(),
            secretkey: String::new(),
            sessiontoken: String::new(),
            rootdirectory: String::new(),
            chunksize: DEFAULT_CHUNK_SIZE,
            multipartcopythresholdsize: DEFAULT_COPY_THRESHOLD,
            multipartcopychunksize: DEFAULT_COPY_CHUNK_SIZE,
            multipartcopymaxconcurrency: DEFAULT_COPY_CONCURRENCY,
            encrypt: false,
            keyid: String::new(),
            secure: true,
            skipverify: false,
            maxretries: 5,
            retrytimeout: Duration::from_secs(60),
            requesttimeout: Duration::from_secs(60),
        }
    }
}

impl S3Config {
    /// The mistakes distribution refuses at start, with the key to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.region.is_empty() {
            return Err("storage.s3.region is required".into());
        }
        if self.bucket.is_empty() {
            return Err("storage.s3.bucket is required".into());
        }
        if self.accesskey.is_empty() != self.secretkey.is_empty() {
            return Err("storage.s3.accesskey and storage.s3.secretkey go together".into());
        }
        if self.chunksize < MIN_CHUNK_SIZE {
            return Err(format!(
                "storage.s3.chunksize must be at least {MIN_CHUNK_SIZE} (S3's smallest part)"
            ));
        }
        if !(MIN_CHUNK_SIZE..=MAX_SINGLE_COPY).contains(&self.multipartcopychunksize) {
            return Err(format!(
                "storage.s3.multipartcopychunksize must be between {MIN_CHUNK_SIZE} and {MAX_SINGLE_COPY}"
            ));
        }
        if self.multipartcopymaxconcurrency == 0 {
            return Err("storage.s3.multipartcopymaxconcurrency must be at least 1".into());
        }
        if self.requesttimeout.is_zero() {
            return Err("storage.s3.requesttimeout must be more than 0".into());
        }
        Ok(())
    }

    /// The key prefix every object of this registry lives under ("" for the bucket's root).
    pub fn root_prefix(&self) -> String {
        self.rootdirectory.trim_matches('/').to_string()
    }

    /// TLS, timeouts and connection reuse, for the store and for copies in parts.
    pub(super) fn client_options(&self) -> ClientOptions {
        ClientOptions::new()
            .with_allow_http(!self.secure || self.regionendpoint.starts_with("http://"))
            .with_timeout(self.requesttimeout)
            .with_connect_timeout(self.requesttimeout.min(Duration::from_secs(10)))
            .with_allow_invalid_certificates(self.skipverify)
            // Multipart parts go out several at a time; keep their connections.
            .with_pool_max_idle_per_host(32)
    }

    /// The server-side encryption headers of a new object (`encrypt`, `keyid`).
    pub(super) fn encryption_headers(&self) -> Vec<(&'static str, String)> {
        match (self.encrypt, self.keyid.is_empty()) {
            (false, _) => Vec::new(),
            (true, true) => vec![("x-amz-server-side-encryption", "AES256".into())],
            (true, false) => vec![
                ("x-amz-server-side-encryption", "aws:kms".into()),
                (
                    "x-amz-server-side-encryption-aws-kms-key-id",
                    self.keyid.clone(),
                ),
            ],
        }
    }

    pub(super) fn build_store(&self) -> object_store::Result<AmazonS3> {
        // Environment first, so credentials and settings the config leaves out come from
        // `AWS_*` (and, lacking those, from web identity or instance metadata).
        let mut builder = AmazonS3Builder::from_env()
            .with_region(&self.region)
            .with_bucket_name(&self.bucket)
            .with_virtual_hosted_style_request(!self.forcepathstyle)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: self.maxretries,
                retry_timeout: self.retrytimeout,
            })
            // Client options hold allow_http too: the builder's setter would be replaced.
            .with_client_options(self.client_options());
        if !self.regionendpoint.is_empty() {
            let endpoint = self.regionendpoint.trim_end_matches('/');
            builder = if self.forcepathstyle {
                builder.with_endpoint(endpoint)
            } else {
                // object_store expects a virtual-hosted endpoint to name the bucket already.
                builder.with_endpoint(virtual_hosted_endpoint(endpoint, &self.bucket))
            };
        }
        if !self.accesskey.is_empty() {
            builder = builder
                .with_access_key_id(&self.accesskey)
                .with_secret_access_key(&self.secretkey);
            if !self.sessiontoken.is_empty() {
                builder = builder.with_token(&self.sessiontoken);
            }
        }
        if self.encrypt {
            builder = if self.keyid.is_empty() {
                // The key's enum is private to object_store; its config name is not.
                let key: AmazonS3ConfigKey = "aws_server_side_encryption".parse()?;
                builder.with_config(key, "AES256")
            } else {
                builder.with_sse_kms_encryption(&self.keyid)
            };
        }
        builder.build()
    }
}

/// `https://host:port` → `https://bucket.host:port`.
fn virtual_hosted_endpoint(endpoint: &str, bucket: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, host)) => format!("{scheme}://{bucket}.{host}"),
        None => format!("https://{bucket}.{endpoint}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_keys_read() {
        let yaml = "region: us-east-1\nregionendpoint: http://127.0.0.1:9000\nforcepathstyle: true\nbucket: reg\naccesskey: a\nsecretkey: s\nrootdirectory: /prefix/\nchunksize: 5242880\nencrypt: false\nsecure: true\nv4auth: true\nrequesttimeout: 2s\nmultipartcopychunksize: 33554432\nmultipartcopymaxconcurrency: 100\nmultipartcopythresholdsize: 67108864\n";
        let c: S3Config = serde_yaml::from_str(yaml).expect("parse");
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.root_prefix(), "prefix");
        assert_eq!(c.chunksize, 5 << 20);
        assert_eq!(c.requesttimeout, Duration::from_secs(2));
        assert_eq!(c.multipartcopythresholdsize, 64 << 20);
        c.build_store().expect("store");
    }

    #[test]
    fn mistakes_are_refused() {
        let ok = S3Config {
            region: "r".into(),
            bucket: "b".into(),
            ..S3Config::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        for bad in [
            S3Config {
                region: String::new(),
                ..ok.clone()
            },
            S3Config {
                bucket: String::new(),
                ..ok.clone()
            },
            S3Config {
                accesskey: "a".into(),
                ..ok.clone()
            },
            S3Config {
                chunksize: 1 << 20,
                ..ok.clone()
            },
            S3Config {
                multipartcopychunksize: 1 << 20,
                ..ok.clone()
            },
            S3Config {
                multipartcopymaxconcurrency: 0,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!(
            virtual_hosted_endpoint("https://s3.example:9000", "b"),
            "https://b.s3.example:9000"
        );
    }
}
