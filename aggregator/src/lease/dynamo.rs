//! The lease as one DynamoDB item (key `lease_id` = the fleet's name; attributes `holder`,
//! `token`, `expires_ms`), every write conditional, every read strongly consistent. A refused
//! condition (`ConditionalCheckFailedException`) is the answer "not taken" / "lost"; anything
//! else is a typed [`LeaseError`] with AWS's code and message. The SDK is set up as the Route 53
//! backend sets it up ([`crate::backend::route53::sdk_loader`]: credentials from the default
//! chain, rustls, short timeouts, no SDK retries: the keeper retries on its own period).
//!
//! The table must not have TTL enabled on `expires_ms`: deleting an expired item would restart
//! the tokens at 1, and the fencing token must only grow.

use super::core::LeaseRecord;
use super::store::{LeaseFuture, LeaseStore};
use super::LeaseError;
use crate::backend::route53::sdk_loader;
use aws_sdk_dynamodb as dynamodb;
use dynamodb::error::{ProvideErrorMetadata, SdkError};
use dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus,
};
use std::collections::HashMap;
use std::time::Duration;

/// The table's partition key.
pub const LEASE_KEY: &str = "lease_id";

/// How long [`ensure_lease_table`] waits for a new table to become ACTIVE (DynamoDB takes
/// seconds; a minute means something is wrong), polling every [`TABLE_POLL`].
const TABLE_WAIT: Duration = Duration::from_secs(60);
const TABLE_POLL: Duration = Duration::from_secs(1);

/// The lease item in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoLeaseStore {
    client: dynamodb::Client,
    table: String,
    lease_id: String,
}

impl DynamoLeaseStore {
    /// The item `lease_id` in `table`, through `client`.
    pub fn new(client: dynamodb::Client, table: &str, lease_id: &str) -> Self {
        DynamoLeaseStore {
            client,
            table: table.to_owned(),
            lease_id: lease_id.to_owned(),
        }
    }

    /// A client for the lease table's Region and endpoint: `endpoint_url` (the lease's, else
    /// the `[route53]` one) and `aws_region`, credentials from the default chain as the
    /// Route 53 backend loads them. Loading contacts nothing.
    pub async fn client(endpoint_url: Option<&str>, aws_region: &str) -> dynamodb::Client {
        let sdk = sdk_loader(endpoint_url, Some(aws_region)).load().await;
        dynamodb::Client::new(&sdk)
    }

    fn key(&self) -> AttributeValue {
        AttributeValue::S(self.lease_id.clone())
    }

    /// A conditional UpdateItem on the holder's tenure: `set` happens only if the item still
    /// names `holder` with `token`. `expires` is the value of `:expires` when `set` writes
    /// `#expires` (DynamoDB refuses names and values an expression does not use).
    async fn update_if_holder(
        &self,
        holder: &str,
        token: u64,
        set: &str,
        expires: Option<u64>,
    ) -> Result<bool, SdkError<dynamodb::operation::update_item::UpdateItemError>> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(LEASE_KEY, self.key())
            .update_expression(set)
            .condition_expression("#holder = :me AND #token = :token")
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":me", AttributeValue::S(holder.to_owned()))
            .expression_attribute_values(":token", number(token));
        if let Some(expires_ms) = expires {
            request = request
                .expression_attribute_names("#expires", "expires_ms")
                .expression_attribute_values(":expires", number(expires_ms));
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

fn number(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// AWS's error code and message, or the error chain when the call never got an answer.
fn describe<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err.code() {
        Some(code) => format!("{code}: {}", err.message().unwrap_or("(no message)")),
        None => vantage_runtime::errors::chain(err),
    }
}

/// The record in a GetItem answer; a malformed item is an error, not a free lease.
fn parse(item: &HashMap<String, AttributeValue>) -> Result<LeaseRecord, LeaseError> {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s.clone()),
        other => Err(LeaseError::Malformed(format!(
            "{name} is {other:?}, not a string"
        ))),
    };
    let num = |name: &str| match item.get(name) {
        Some(AttributeValue::N(n)) => n
            .parse::<u64>()
            .map_err(|_| LeaseError::Malformed(format!("{name} = {n:?} is not a whole number"))),
        other => Err(LeaseError::Malformed(format!(
            "{name} is {other:?}, not a number"
        ))),
    };
    Ok(LeaseRecord {
        holder: text("holder")?,
        token: num("token")?,
        expires_ms: num("expires_ms")?,
    })
}

impl LeaseStore for DynamoLeaseStore {
    fn read(&self) -> LeaseFuture<'_, Option<LeaseRecord>> {
        Box::pin(async move {
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .key(LEASE_KEY, self.key())
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| LeaseError::Read(describe(&e)))?;
            out.item().map(parse).transpose()
        })
    }

    fn acquire<'a>(&'a self, next: &'a LeaseRecord, stale_before_ms: u64) -> LeaseFuture<'a, bool> {
        Box::pin(async move {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .item(LEASE_KEY, self.key())
                .item("holder", AttributeValue::S(next.holder.clone()))
                .item("token", number(next.token))
                .item("expires_ms", number(next.expires_ms))
                // Free, or expired past the skew bound and holding a smaller token (so a
                // released lease never hands the same token out twice).
                .condition_expression(
                    "attribute_not_exists(#key) OR (#expires < :stale AND #token < :token)",
                )
                .expression_attribute_names("#key", LEASE_KEY)
                .expression_attribute_names("#expires", "expires_ms")
                .expression_attribute_names("#token", "token")
                .expression_attribute_values(":stale", number(stale_before_ms))
                .expression_attribute_values(":token", number(next.token))
                .send()
                .await;
            match result {
                Ok(_) => Ok(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                {
                    Ok(false)
                }
                Err(e) => Err(LeaseError::Acquire(describe(&e))),
            }
        })
    }

    fn renew<'a>(&'a self, next: &'a LeaseRecord) -> LeaseFuture<'a, bool> {
        Box::pin(async move {
            self.update_if_holder(
                &next.holder,
                next.token,
                "SET #expires = :expires",
                Some(next.expires_ms),
            )
            .await
            .map_err(|e| LeaseError::Renew(describe(&e)))
        })
    }

    fn fence<'a>(&'a self, holder: &'a str, token: u64) -> LeaseFuture<'a, bool> {
        // A write that changes nothing, so the check is DynamoDB's own conditional check on
        // the item as it is now, not a read that could be answered from a stale copy.
        Box::pin(async move {
            self.update_if_holder(holder, token, "SET #token = :token", None)
                .await
                .map_err(|e| LeaseError::Fence(describe(&e)))
        })
    }

    fn release<'a>(&'a self, holder: &'a str, token: u64) -> LeaseFuture<'a, bool> {
        Box::pin(async move {
            self.update_if_holder(holder, token, "SET #expires = :expires", Some(0))
                .await
                .map_err(|e| LeaseError::Release(describe(&e)))
        })
    }
}

/// Creates the lease table (partition key `lease_id`, a string; on-demand capacity) or adopts
/// the one that exists, then waits (at most a minute) until it is ACTIVE. Returns whether it
/// was created. An existing table with another key is an error, never changed.
pub async fn ensure_lease_table(
    client: &dynamodb::Client,
    table: &str,
) -> Result<bool, LeaseError> {
    let build = |e: dynamodb::error::BuildError| LeaseError::CreateTable {
        table: table.to_owned(),
        message: e.to_string(),
    };
    let created = client
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(LEASE_KEY)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build)?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(LEASE_KEY)
                .key_type(KeyType::Hash)
                .build()
                .map_err(build)?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    let created = match created {
        Ok(_) => true,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            false
        }
        Err(e) => {
            return Err(LeaseError::CreateTable {
                table: table.to_owned(),
                message: describe(&e),
            })
        }
    };
    let mut waited = Duration::ZERO;
    loop {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| LeaseError::DescribeTable {
                table: table.to_owned(),
                message: describe(&e),
            })?;
        let Some(t) = described.table() else {
            return Err(LeaseError::DescribeTable {
                table: table.to_owned(),
                message: "DescribeTable answered without a table".into(),
            });
        };
        let keys: Vec<String> = t
            .key_schema()
            .iter()
            .map(|k| format!("{} ({})", k.attribute_name(), k.key_type().as_str()))
            .collect();
        if keys != [format!("{LEASE_KEY} (HASH)")] {
            return Err(LeaseError::TableShape {
                table: table.to_owned(),
                found: keys.join(", "),
            });
        }
        let status = t.table_status().cloned();
        if status == Some(TableStatus::Active) {
            return Ok(created);
        }
        if waited >= TABLE_WAIT {
            return Err(LeaseError::TableNotActive {
                table: table.to_owned(),
                status: status.map_or_else(|| "unknown".to_owned(), |s| s.as_str().to_owned()),
            });
        }
        tokio::time::sleep(TABLE_POLL).await;
        waited += TABLE_POLL;
    }
}
