//! Bridges aws-config's credential chain into object_store's `CredentialProvider`.
//!
//! aws-config resolves credentials the way every AWS SDK does: environment, shared
//! profile (including SSO), web identity (IRSA on EKS), ECS and EKS pod identity, then
//! the EC2 instance metadata service. This bridge caches what it returns and asks again
//! shortly before expiry, so requests never sign with expired credentials and the chain
//! is not consulted per request.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::aws::AwsCredential;
use object_store::CredentialProvider;
use tokio::sync::Mutex;

/// Refresh this long before the credentials expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
pub struct AwsConfigCredentials {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl AwsConfigCredentials {
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        Self {
            provider,
            cached: Mutex::new(None),
        }
    }
}

fn fresh(expiry: Option<SystemTime>, now: SystemTime) -> bool {
    expiry.is_none_or(|e| e > now + REFRESH_BEFORE_EXPIRY)
}

#[async_trait]
impl CredentialProvider for AwsConfigCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((credential, expiry)) = cached.as_ref() {
            if fresh(*expiry, SystemTime::now()) {
                return Ok(credential.clone());
            }
        }
        let c = self.provider.provide_credentials().await.map_err(|e| {
            object_store::Error::Generic {
                store: "S3",
                source: format!("no AWS credentials from the default chain: {e}").into(),
            }
        })?;
        let credential = Arc::new(AwsCredential {
            key_id: c.access_key_id().to_string(),
            secret_key: c.secret_access_key().to_string(),
            token: c.session_token().map(str::to_string),
        });
        *cached = Some((credential.clone(), c.expiry()));
        Ok(credential)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;

    #[tokio::test]
    async fn caches_until_close_to_expiry() {
        let static_creds = Credentials::new("AKID", "SECRET", Some("TOKEN".into()), None, "test");
        let bridge = AwsConfigCredentials::new(SharedCredentialsProvider::new(static_creds));
        let a = bridge.get_credential().await.unwrap();
        assert_eq!(
            (a.key_id.as_str(), a.token.as_deref()),
            ("AKID", Some("TOKEN"))
        );
        let b = bridge.get_credential().await.unwrap();
        assert!(Arc::ptr_eq(&a, &b), "served from the cache");

        let now = SystemTime::now();
        assert!(fresh(None, now));
        assert!(fresh(Some(now + Duration::from_secs(3600)), now));
        assert!(!fresh(Some(now + Duration::from_secs(60)), now));
    }
}
