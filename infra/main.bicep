// aml-autodeploy on Azure Functions Flex Consumption: storage (with the deployment container),
// Application Insights, the Function App (custom handler runtime, system-assigned identity,
// identity-based AzureWebJobsStorage), a Key Vault holding the GitHub credential referenced from app
// settings, and the role assignments the app needs. Deploy this first, then the code (zip), then
// eventgrid.bicep (the subscription needs the deployed function).

@description('Name of the Function App (also the prefix of the other resources).')
param functionAppName string

@description('Name of the Azure ML workspace, in this resource group, whose models are deployed.')
param workspaceName string

@description('Region.')
param location string = resourceGroup().location

@description('GitHub App id (or client id); leave empty to use a personal access token.')
param githubAppId string = ''

@description('GitHub App private key (PEM) or personal access token, stored in Key Vault.')
@secure()
param githubSecret string = ''

@description('Name of the Key Vault secret that holds githubSecret.')
param githubSecretName string = 'github-credential'

@description('Maximum instances of the Flex Consumption app.')
param maximumInstanceCount int = 40

@description('Storage account (in this resource group) holding the input of batch smoke jobs on credential-less datastores; leave empty when none.')
param batchInputStorageAccountName string = ''

var storageName = take(toLower(replace('${functionAppName}st', '-', '')), 24)
var deploymentContainer = 'app-package'
var ledgerContainer = 'autodeploy'
var deadLetterContainer = 'eventgrid-deadletter'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identity only: the app and the host use managed identity
    minimumTlsVersion: 'TLS1_2'
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainerResource 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainer
}

resource ledgerContainerResource 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: ledgerContainer
}

resource deadLetterContainerResource 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainer
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${functionAppName}-logs'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${functionAppName}-ai'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: take('${functionAppName}-kv', 24)
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
  }
}

resource githubSecretResource 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(githubSecret)) {
  parent: vault
  name: githubSecretName
  properties: { value: githubSecret }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${functionAppName}-plan'
  location: location
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

var githubReference = '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${githubSecretName})'

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: 'SystemAssigned'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      // Custom handlers run on the `custom` runtime; host.json names the executable.
      runtime: { name: 'custom', version: '1.0' }
    }
    siteConfig: {
      appSettings: concat([
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'AUTODEPLOY_CONFIG', value: 'autodeploy.yml' }
        { name: 'AUTODEPLOY_CONTAINER', value: ledgerContainer }
        { name: 'AUTODEPLOY_CREDENTIAL', value: 'managed-identity' }
      ], empty(githubAppId) ? [
        { name: 'GITHUB_TOKEN', value: githubReference }
      ] : [
        { name: 'GITHUB_APP_ID', value: githubAppId }
        { name: 'GITHUB_APP_PRIVATE_KEY', value: githubReference }
      ])
    }
  }
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

// Built-in role ids.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
// Covers online and batch endpoints alike: deployments, the batch endpoint's default switch, and
// the smoke job (invoking a batch deployment creates a job and its runs as the invoking identity,
// reads the data asset and lists datastore secrets), all workspace actions this role grants.
var azureMlDataScientist = 'f6c7c914-8db3-469d-8ca1-694a8f32e121'
// A batch job reads a credential-less datastore as the identity that invoked it (here the app's).
var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
// Canary analysis reads the endpoints' Azure Monitor metrics (Microsoft.Insights/metrics/read),
// which no Azure ML role grants; on the workspace it covers every endpoint below it.
var monitoringReader = '43d0d8ad-25c7-4714-9337-8ba259a9fe05'

resource ledgerRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionApp.id, storageBlobDataOwner)
  scope: storage
  properties: {
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
  }
}

resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionApp.id, keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

resource workspaceRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, functionApp.id, azureMlDataScientist)
  scope: workspace
  properties: {
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', azureMlDataScientist)
  }
}

resource metricsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, functionApp.id, monitoringReader)
  scope: workspace
  properties: {
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringReader)
  }
}

resource batchInput 'Microsoft.Storage/storageAccounts@2023-05-01' existing = if (!empty(batchInputStorageAccountName)) {
  name: empty(batchInputStorageAccountName) ? storageName : batchInputStorageAccountName
}

resource batchInputRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(batchInputStorageAccountName)) {
  name: guid(batchInput.id, functionApp.id, storageBlobDataReader)
  scope: batchInput
  properties: {
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
  }
}

output functionAppName string = functionApp.name
output storageAccountName string = storage.name
output deadLetterContainer string = deadLetterContainer
