// The app's storage account: its queues, tables and blob containers, reachable only with an
// Entra ID token (no account key, no SAS).
//
// The names below are the ones in shared/store/stores.py, blobs.py and leases.py, in one
// place; tests/test_infra.py fails when the code has one that is missing here. The app also
// creates what is missing at start (Stores.ensure), and a consumer queue named by the config
// file's events.queue, which is why its identity holds the data Contributor roles.

@description('Name of the storage account (3 to 24 lower-case letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object

@description('Blob container the Flex Consumption plan deploys the app package to.')
param deploymentContainerName string

@description('Redundancy of the account. Raw mail is the record of what arrived: ZRS or GZRS where the region has them.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param sku string = 'Standard_LRS'

@description('Days deleted blobs and containers can be restored.')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 7

// Queues of the pipeline (stores.QUEUES); each has a poison queue, stores.poison(name).
var queueNames = [
  'inbound'
  'filing'
  'events'
  'deliveries'
  'graph-notifications'
  'graph-fetch'
  'polls'
  'task-changes'
  'outbound'
  'mailbox-actions'
]
var allQueueNames = concat(queueNames, map(queueNames, queue => '${queue}-poison'))

// Tables (stores.TABLES).
var tableNames = [
  'Messages'
  'Records'
  'Timeline'
  'Ingest'
  'Mailboxes'
  'MailboxActions'
  'Conversations'
  'Contacts'
  'Held'
  'Retention'
  'GraphState'
  'ImapState'
  'EwsState'
  'Notices'
  'Audit'
  'EventDeliveries'
  'Outbox'
  'PendingActions'
]

// Blob containers: raw mail (blobs.RAW_CONTAINER), request slots (leases.LOCKS_CONTAINER), and
// the deployment package.
var containerNames = [
  'raw'
  'locks'
  deploymentContainerName
]

resource account 'Microsoft.Storage/storageAccounts@2024-01-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: sku
  }
  properties: {
    // Entra ID only: requests signed with the account key (or a SAS made from it) fail.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    accessTier: 'Hot'
    // Reachable over the internet, but only with a token of an identity holding a data role.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2024-01-01' = {
  parent: account
  name: 'default'
  properties: {
    // A mistaken delete of raw mail can be undone for a while.
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2024-01-01' = {
  parent: account
  name: 'default'
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2024-01-01' = {
  parent: account
  name: 'default'
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' = [
  for container in containerNames: {
    parent: blobService
    name: container
    properties: {
      publicAccess: 'None'
    }
  }
]

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2024-01-01' = [
  for queue in allQueueNames: {
    parent: queueService
    name: queue
  }
]

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2024-01-01' = [
  for table in tableNames: {
    parent: tableService
    name: table
  }
]

output name string = account.name
output id string = account.id
