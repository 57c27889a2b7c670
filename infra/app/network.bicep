// Optional (vnetEnabled): a virtual network for the app's outbound traffic, so that it can
// reach mail servers on a private network (peering, VPN gateway or ExpressRoute to the
// on-premises network are added to this network separately). Nothing inbound: Graph still
// calls the app's public endpoint.

@description('Name of the virtual network.')
param name string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object

@description('Address space of the virtual network; must not overlap the networks it is connected to.')
param addressPrefix string

@description('Address range of the subnet the function app integrates with.')
param appSubnetPrefix string

var appSubnetName = 'app'

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: appSubnetPrefix
          // Flex Consumption integrates with a subnet delegated to Microsoft.App/environments
          // (the subscription needs the Microsoft.App resource provider registered).
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
          privateEndpointNetworkPolicies: 'Disabled'
          privateLinkServiceNetworkPolicies: 'Enabled'
        }
      }
    ]
  }
}

output id string = vnet.id
output appSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, appSubnetName)
