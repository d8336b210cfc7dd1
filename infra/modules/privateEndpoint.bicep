// One private endpoint (main.bicep privateNetworking) with its DNS record in the shared private zone.

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Private endpoint name.')
param name string

@description('Subnet of the private endpoints.')
param subnetId string

@description('Resource ID of the target (storage account, Key Vault, Event Grid topic).')
param targetId string

@description('Private link group of the target: blob, queue, table, vault or topic.')
param groupId string

@description('Private DNS zone of that group (privateDns.bicep).')
param dnsZoneId string

resource endpoint 'Microsoft.Network/privateEndpoints@2025-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: name
        properties: {
          privateLinkServiceId: targetId
          groupIds: [
            groupId
          ]
        }
      }
    ]
  }
}

resource zoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2025-07-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: groupId
        properties: {
          privateDnsZoneId: dnsZoneId
        }
      }
    ]
  }
}
