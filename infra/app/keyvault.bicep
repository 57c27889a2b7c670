// Where the app's secrets live. Access is by Azure RBAC only (no access policies): the app's
// identity may read secrets (Key Vault Secrets User), the operator may set them (Secrets
// Officer); nobody else is granted anything here.

@description('Name of the vault (3 to 24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags for the resource.')
param tags object

@description('Days a deleted vault and its secrets can be recovered.')
@minValue(7)
@maxValue(90)
param retentionDays int = 90

@description('Public network access. Disabled needs a private endpoint for the vault, which this template does not create.')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    // A deleted secret or vault can be recovered, and purge protection means nobody (not even
    // an owner) can destroy it before the retention ends. It cannot be switched off again.
    enableSoftDelete: true
    softDeleteRetentionInDays: retentionDays
    enablePurgeProtection: true
    // The vault holds secrets only: no VM, template or disk-encryption access.
    enabledForDeployment: false
    enabledForTemplateDeployment: false
    enabledForDiskEncryption: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      defaultAction: publicNetworkAccess == 'Enabled' ? 'Allow' : 'Deny'
      bypass: 'AzureServices'
    }
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
