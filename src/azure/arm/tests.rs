use super::*;

#[derive(Debug)]
struct NoCredential;

#[async_trait::async_trait]
impl TokenCredential for NoCredential {
    async fn get_token(
        &self,
        _: &[&str],
        _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            "no",
        ))
    }
}

fn client(endpoint: &str, cloud: Cloud) -> ArmClient {
    ArmClient::new(
        &ArmSettings {
            cloud,
            endpoint: endpoint.into(),
            api_version: DEFAULT_API_VERSION.into(),
            budget: Duration::from_secs(1),
        },
        Arc::new(NoCredential),
        Http::new(),
    )
    .unwrap()
}

#[test]
fn scoring_credentials_go_only_to_the_clouds_inference_domain() {
    let c = client("https://management.azure.com", Cloud::Public);
    for (u, allowed) in [
        (
            "https://credit-ep.westeurope.inference.ml.azure.com/score",
            true,
        ),
        (
            "http://credit-ep.westeurope.inference.ml.azure.com/score",
            false,
        ),
        (
            "https://credit-ep.westeurope.inference.ml.azure.com.evil.example/score",
            false,
        ),
        (
            "https://credit-ep.usgovvirginia.inference.ml.azure.us/score",
            false,
        ),
        ("https://evil.example.com/score", false),
    ] {
        let url = Url::parse(u).unwrap();
        assert_eq!(c.may_receive_scoring_credentials(&url), allowed, "{u}");
    }
    let gov = client("https://management.usgovcloudapi.net", Cloud::UsGov);
    let url = Url::parse("https://ep.usgovvirginia.inference.ml.azure.us/score").unwrap();
    assert!(gov.may_receive_scoring_credentials(&url));
    let local = client("http://127.0.0.1:4000", Cloud::Public);
    assert!(
        local.may_receive_scoring_credentials(&Url::parse("http://127.0.0.1:4000/score").unwrap())
    );
    assert!(
        !local.may_receive_scoring_credentials(&Url::parse("http://127.0.0.1:4001/score").unwrap())
    );
}

#[test]
fn tokens_go_only_to_arm_and_the_clouds_azure_ml_hosts() {
    let c = client("https://management.azure.com", Cloud::Public);
    let ok = [
        "https://management.azure.com/subscriptions/x/operations/1",
        "https://westeurope.api.azureml.ms/mlflow/v2.0/x",
    ];
    let refused = [
        "https://evil.example.com/operations/1",
        "http://management.azure.com/x",
        "https://management.azure.com.evil.example/x",
        "https://westeurope.api.ml.azure.us/x",
        "http://westeurope.api.azureml.ms/x",
    ];
    for u in ok {
        assert!(c.may_receive_token(&Url::parse(u).unwrap()), "{u}");
    }
    for u in refused {
        assert!(!c.may_receive_token(&Url::parse(u).unwrap()), "{u}");
    }
    let local = client("http://127.0.0.1:4000", Cloud::UsGov);
    assert!(local.may_receive_token(&Url::parse("http://127.0.0.1:4000/op").unwrap()));
    assert!(!local.may_receive_token(&Url::parse("http://127.0.0.1:4001/op").unwrap()));
    assert!(
        local.may_receive_token(&Url::parse("https://usgovvirginia.api.ml.azure.us/x").unwrap())
    );
}

#[test]
fn resource_urls_carry_the_api_version() {
    let c = client("http://127.0.0.1:4000/", Cloud::Public);
    let url = c.resource_url("/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws").unwrap();
    assert_eq!(
        url.as_str(),
        "http://127.0.0.1:4000/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws?api-version=2025-12-01"
    );
}
