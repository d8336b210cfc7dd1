// One region's network for private networking (main.bicep privateNetworking): a subnet the Flex Consumption
// function app integrates with (delegated to Microsoft.App/environments), a subnet for the private endpoints of
// the PHI data account, Key Vault and the custom Event Grid topic, and the DIMSE gateway's Container Apps
// environment subnet (it reaches the data account through the same private endpoints).

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Virtual network name.')
param name string

@description('Address space; must not overlap the other region\'s.')
param addressPrefix string

@description('Subnet for the function app\'s VNet integration (inside addressPrefix).')
param appPrefix string

@description('Subnet for the private endpoints (inside addressPrefix).')
param endpointPrefix string

@description('Subnet of the DIMSE gateway\'s Container Apps environment (inside addressPrefix; /27 or larger).')
param gatewayPrefix string

resource vnet 'Microsoft.Network/virtualNetworks@2025-07-01' = {
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
        name: 'apps'
        properties: {
          addressPrefix: appPrefix
          delegations: [
            {
              name: 'flex'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: 'endpoints'
        properties: {
          addressPrefix: endpointPrefix
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
      {
        name: 'gateway'
        properties: {
          addressPrefix: gatewayPrefix
          delegations: [
            {
              name: 'containerapps'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
    ]
  }
}

output id string = vnet.id
output name string = vnet.name
output appSubnetId string = vnet.properties.subnets[0].id
output endpointSubnetId string = vnet.properties.subnets[1].id
output gatewaySubnetId string = vnet.properties.subnets[2].id
