// Mailfiler on Azure: what `azd up` provisions in a fresh subscription.
//
// One resource group holding a Flex Consumption function app and what it needs. The app
// reaches storage, Key Vault and Application Insights with one user-assigned managed identity
// and nothing else: no account key, connection string or secret value appears here or in the
// parameters. Secrets live in Key Vault; the app settings only point at them.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; it names the resource group and seeds every resource name.')
param environmentName string

@minLength(1)
@description('Azure region for every resource. It must offer the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group to create; empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Object id of the person (or pipeline) running azd; azd passes AZURE_PRINCIPAL_ID. Granted Key Vault Secrets Officer so they can set the secrets. Empty: nobody.')
param principalId string = ''

@description('What principalId is.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Also grant principalId data access to the storage account (blob, queue, table), for the mailfiler command line against this deployment. Off: only the app reads its data.')
param operatorDataAccess bool = false

@description('Python version of the function app.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Most instances the app scales out to. Flex Consumption accepts 40 to 1000.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Instances of the HTTP functions kept warm (billed while idle). 0: scale to zero; 1 or more shortens cold starts, which matter for Graph\'s 10-second validation handshake.')
@minValue(0)
@maxValue(20)
param alwaysReadyInstances int = 0

@description('Path of the configuration file in the deployed package (app setting MAILFILER_CONFIG).')
param configFile string = 'mailfiler.yaml'

@description('Comma-separated names of the app settings that hold secrets. Each becomes a Key Vault reference to the secret named like the setting, lower case, with - for _ (MAILFILER_TOKEN_KEY: mailfiler-token-key). A string, not an array, so that `azd env set` can carry it.')
param secretSettingNames string = 'MAILFILER_TOKEN_KEY,GRAPH_CLIENT_STATE_SECRET'

@description('Days a deleted Key Vault (and its secrets) can be recovered. Purge protection keeps it for this long whatever happens.')
@minValue(7)
@maxValue(90)
param keyVaultRetentionDays int = 90

@description('Public network access to Key Vault. Disabled needs a private endpoint for the vault in the app\'s virtual network, which this template does not create.')
@allowed([
  'Enabled'
  'Disabled'
])
param keyVaultPublicNetworkAccess string = 'Enabled'

@description('Run the app inside a virtual network (outbound traffic through it): for mail servers reachable only privately (on-premises Exchange or IMAP over VPN or ExpressRoute).')
param vnetEnabled bool = false

@description('Address space of the virtual network (vnetEnabled).')
param vnetAddressPrefix string = '10.60.0.0/16'

@description('Address range of the subnet the app integrates with (vnetEnabled); a /24 leaves room to scale.')
param appSubnetPrefix string = '10.60.1.0/24'

@description('Application (client) id of an existing Microsoft Entra app registration that declares the app roles of infra/entra/app-roles.json; App Service Authentication signs people in to the console and API with it. Empty: no sign-in, and the console refuses everyone in Azure.')
param authClientId string = ''

@description('Tenant of that app registration; empty: the tenant of the subscription.')
param authTenantId string = ''

@description('Name of the app setting that holds the app registration\'s client secret, set in Key Vault like the other secret settings; empty: sign-in by ID token only (the registration issues ID tokens).')
param authClientSecretSetting string = ''

@description('Email address alerts are sent to. Empty: no action group; the alerts still fire and show in the portal.')
param alertEmail string = ''

// Names: an abbreviation of the resource type and a token unique to subscription, environment
// and region (13 characters), so that a second environment never collides with the first.
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var deploymentContainerName = 'app-package'
// ' A, B ,' -> ['A', 'B']: tolerant of the spaces and stray commas of a hand-typed list.
// The console's CSRF key is always among them: every instance must sign and check its forms'
// tokens with the same key (shared/console/access.py reads it).
var consoleCsrfSetting = 'MAILFILER_CONSOLE_CSRF_SECRET'
var secretSettings = union(
  filter(map(split(secretSettingNames, ','), name => trim(name)), name => !empty(name)),
  [consoleCsrfSetting],
  empty(authClientSecretSetting) ? [] : [authClientSecretSetting]
)

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    workspaceName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    retentionDays: keyVaultRetentionDays
    publicNetworkAccess: keyVaultPublicNetworkAccess
  }
}

module network 'app/network.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    name: 'vnet-${resourceToken}'
    location: location
    tags: tags
    addressPrefix: vnetAddressPrefix
    appSubnetPrefix: appSubnetPrefix
  }
}

module roles 'app/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    identityPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
    operatorDataAccess: operatorDataAccess
  }
}

module app 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    name: 'func-${resourceToken}'
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
    secretSettings: secretSettings
    configFile: configFile
    runtimeVersion: pythonVersion
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    alwaysReadyInstances: alwaysReadyInstances
    subnetId: vnetEnabled ? network.outputs.appSubnetId : ''
    authClientId: authClientId
    authTenantId: authTenantId
    authClientSecretSetting: authClientSecretSetting
  }
  // The host starts as soon as the site exists: its identity must already reach storage and
  // the vault, or the first start fails and Key Vault references stay unresolved.
  dependsOn: [
    roles
  ]
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: 'mailfiler-${resourceToken}'
    location: location
    tags: tags
    appInsightsName: monitoring.outputs.appInsightsName
    alertEmail: alertEmail
  }
}

// azd stores these in the environment (`azd env get-values`); docs/deploy.md uses them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output AZURE_FUNCTION_URL string = 'https://${app.outputs.defaultHostName}'
// What Graph calls; the config file's graph.notification_url is AZURE_FUNCTION_URL + '/api'.
output GRAPH_NOTIFICATION_URL string = 'https://${app.outputs.defaultHostName}/api/graph/notifications'
output GRAPH_LIFECYCLE_URL string = 'https://${app.outputs.defaultHostName}/api/graph/lifecycle'
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
// The console, printed by `azd up` (azure.yaml's postdeploy hook), and the redirect URI the app
// registration must list for App Service Authentication's sign-in.
output MAILFILER_CONSOLE_URL string = 'https://${app.outputs.defaultHostName}/api/console'
output AUTH_REDIRECT_URI string = 'https://${app.outputs.defaultHostName}/.auth/login/aad/callback'
output AUTH_ENABLED bool = app.outputs.authEnabled
// The client id of the app's identity: `client_id` of a mailbox with `auth: managed_identity`.
output AZURE_IDENTITY_CLIENT_ID string = identity.outputs.clientId
