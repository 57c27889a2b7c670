// The function app on the Flex Consumption plan: Linux, Python, scaled by events to zero,
// deployed from a blob container, and configured to reach everything with its identity.

@description('Name of the function app (its host name is derived from it).')
param name string

@description('Name of the Flex Consumption plan (one app per plan).')
param planName string

@description('Azure region.')
param location string

@description('Tags for the resources; the site also gets azd-service-name: api.')
param tags object

@description('Resource id of the user-assigned identity the app runs with.')
param identityId string

@description('Client id of that identity, for the settings that select it.')
param identityClientId string

@description('Name of the storage account (host storage, the app\'s data, the package).')
param storageAccountName string

@description('Blob container of the deployment package.')
param deploymentContainerName string

@description('Name of the Application Insights component.')
param appInsightsName string

@description('Name of the Key Vault the secret settings refer to.')
param keyVaultName string

@description('Names of the app settings that hold secrets: each becomes a Key Vault reference.')
param secretSettings array

@description('Path of the configuration file in the package (MAILFILER_CONFIG).')
param configFile string

@description('Python version.')
@allowed([
  '3.11'
  '3.12'
])
param runtimeVersion string = '3.11'

@description('Most instances the app scales out to.')
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

@description('Always-ready instances of the HTTP functions (0: scale to zero).')
@minValue(0)
param alwaysReadyInstances int = 0

@description('Resource id of the subnet to integrate with; empty: no virtual network.')
param subnetId string = ''

@description('Application (client) id of the Microsoft Entra app registration people sign in to the console and API with (App Service Authentication). Empty: no sign-in in front of the app.')
param authClientId string = ''

@description('Tenant of that app registration; empty: the tenant of the subscription.')
param authTenantId string = ''

@description('Name of the app setting (a Key Vault reference) holding the app registration\'s client secret; empty: sign-in by ID token only.')
param authClientSecretSetting string = ''

resource storage 'Microsoft.Storage/storageAccounts@2024-01-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true // Linux
  }
}

// Settings the app and the Functions host read. Storage by identity: the three service URIs
// plus which identity (shared/store/account.py reads the same names as the host). There is no
// AzureWebJobsStorage connection string.
var baseSettings = {
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  // Not a secret: with local auth off it only says where telemetry goes; the token that
  // APPLICATIONINSIGHTS_AUTHENTICATION_STRING selects is what lets it in.
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // DefaultAzureCredential (azure-identity) picks this identity rather than none.
  AZURE_CLIENT_ID: identityClientId
  MAILFILER_CONFIG: configFile
}

// MAILFILER_TOKEN_KEY -> @Microsoft.KeyVault(VaultName=kv-...;SecretName=mailfiler-token-key).
// No version: the platform follows the latest version of the secret.
var secretReferences = toObject(
  secretSettings,
  setting => setting,
  setting => '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${toLower(replace(setting, '_', '-'))})'
)

// Warm instances for the HTTP group (Graph's webhook and the API); none by default.
var alwaysReady = alwaysReadyInstances > 0 ? [
  {
    name: 'http'
    instanceCount: alwaysReadyInstances
  }
] : []

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Graph posts change notifications to /api/graph/notifications from the internet.
    publicNetworkAccess: 'Enabled'
    // Key Vault references are resolved with the user-assigned identity (there is no
    // system-assigned one).
    keyVaultReferenceIdentity: identityId
    virtualNetworkSubnetId: empty(subnetId) ? null : subnetId
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      // No ftpsState: Flex Consumption has no FTP(S) endpoint and rejects the property
      // ("site configuration property Site.SiteConfig.FtpsState ... is invalid"). FTP is
      // closed by the basic publishing credentials policy below.
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        alwaysReady: alwaysReady
      }
      runtime: {
        name: 'python'
        version: runtimeVersion
      }
    }
  }
}

// App Service Authentication ("Easy Auth") in front of the whole app: the console and the API
// answer only people (or clients) signed in with Microsoft Entra ID, and the platform hands the
// app the principal and its app roles (Mailfiler.Read, .Agent, .Admin) in X-MS-CLIENT-PRINCIPAL,
// stripping any copy a caller sent (shared/console/access.py reads it).
// Left open: what Graph calls (it cannot sign in; the functions check its clientState) and the
// health probe (still behind its function key; an uptime monitor cannot sign in either).
var anonymousPaths = [
  '/api/graph/notifications'
  '/api/graph/lifecycle'
  '/api/health'
]
var authIssuer = '${environment().authentication.loginEndpoint}${empty(authTenantId) ? tenant().tenantId : authTenantId}/v2.0'

resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(authClientId)) {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
      runtimeVersion: '~1'
    }
    globalValidation: {
      requireAuthentication: true
      // A browser goes to the sign-in page; a client without a token gets 401.
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      excludedPaths: anonymousPaths
    }
    httpSettings: {
      requireHttps: true
      routes: {
        apiPrefix: '/.auth'
      }
      forwardProxy: {
        convention: 'NoProxy'
      }
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          openIdIssuer: authIssuer
          clientId: authClientId
          clientSecretSettingName: empty(authClientSecretSetting) ? null : authClientSecretSetting
        }
        validation: {
          // Browsers sign in for the app itself; API clients ask for a token for api://<id>.
          allowedAudiences: [
            'api://${authClientId}'
            authClientId
          ]
        }
      }
    }
    login: {
      // Flex Consumption keeps no token store; the app needs only the principal header.
      tokenStore: {
        enabled: false
      }
      preserveUrlFragmentsForLogins: true
    }
  }
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union(baseSettings, secretReferences)
}

// Deployment is by Entra identity only (azd uses the caller's token): no user name and
// password for FTP or the SCM site.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output id string = site.id
output defaultHostName string = site.properties.defaultHostName
output authEnabled bool = !empty(authClientId)
