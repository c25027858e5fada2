// The Event Grid system topic on the Azure ML workspace and the subscription that delivers
// ModelRegistered events to the ModelRegistered function. Deploy after the code: creating the
// subscription validates the function endpoint, which must exist.

@description('Name of the Function App deployed by main.bicep.')
param functionAppName string

@description('Name of the Azure ML workspace, in this resource group.')
param workspaceName string

@description('Region of the workspace.')
param location string = resourceGroup().location

@description('A workspace has only one system topic: the name of an existing one to reuse, or empty to create one.')
param existingSystemTopicName string = ''

@description('Optional subject prefix filter, e.g. models/credit- (subjects are models/{name}:{version}).')
param subjectBeginsWith string = ''

@description('Storage account (from main.bicep) that holds the dead-letter container.')
param storageAccountName string = take(toLower(replace('${functionAppName}st', '-', '')), 24)

@description('Dead-letter container (from main.bicep).')
param deadLetterContainer string = 'eventgrid-deadletter'

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource newTopic 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' = if (empty(existingSystemTopicName)) {
  name: '${workspaceName}-events'
  location: location
  identity: { type: 'SystemAssigned' }
  properties: {
    source: workspace.id
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

resource existingTopic 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' existing = if (!empty(existingSystemTopicName)) {
  name: existingSystemTopicName
}

var topicName = empty(existingSystemTopicName) ? newTopic.name : existingTopic.name

resource topic 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' existing = {
  name: topicName
}

resource subscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2024-06-01-preview' = {
  parent: topic
  name: 'aml-autodeploy-model-registered'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionApp.id}/functions/ModelRegistered'
        maxEventsPerBatch: 1
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [ 'Microsoft.MachineLearningServices.ModelRegistered' ]
      subjectBeginsWith: subjectBeginsWith
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    // The storage account allows no shared keys: Event Grid writes dead letters with the system
    // topic's identity.
    deadLetterWithResourceIdentity: {
      identity: { type: 'SystemAssigned' }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainer
        }
      }
    }
  }
  dependsOn: [ newTopic, deadLetterRole ]
}

var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource deadLetterRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (empty(existingSystemTopicName)) {
  name: guid(storage.id, workspace.id, storageBlobDataContributor)
  scope: storage
  properties: {
    principalId: newTopic!.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
  }
}

output subscriptionName string = subscription.name
