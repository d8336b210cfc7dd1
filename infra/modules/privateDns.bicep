// The private DNS zones of the private endpoints (main.bicep privateNetworking), global and linked to both
// regions' networks: each region resolves its own endpoints and the peer's (the follower reads the peer's change
// feed through the peer's table endpoint).

@description('Tags for every resource.')
param tags object = {}

@description('Resource ID of the primary region\'s virtual network.')
param primaryVnetId string

@description('Resource ID of the secondary region\'s virtual network.')
param secondaryVnetId string

// Service (private endpoint group) -> its privatelink zone.
var zones = [
  {
    key: 'blob'
    name: 'privatelink.blob.${environment().suffixes.storage}'
  }
  {
    key: 'queue'
    name: 'privatelink.queue.${environment().suffixes.storage}'
  }
  {
    key: 'table'
    name: 'privatelink.table.${environment().suffixes.storage}'
  }
  {
    key: 'vault'
    name: 'privatelink.vaultcore.azure.net'
  }
  {
    key: 'topic'
    name: 'privatelink.eventgrid.azure.net'
  }
]
var vnets = [
  primaryVnetId
  secondaryVnetId
]

resource privateZones 'Microsoft.Network/privateDnsZones@2024-06-01' = [for z in zones: {
  name: z.name
  location: 'global'
  tags: tags
}]

resource primaryLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (z, i) in zones: {
  parent: privateZones[i]
  name: 'primary'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnets[0]
    }
  }
}]

resource secondaryLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (z, i) in zones: {
  parent: privateZones[i]
  name: 'secondary'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnets[1]
    }
  }
}]

output zoneIds object = {
  blob: privateZones[0].id
  queue: privateZones[1].id
  table: privateZones[2].id
  vault: privateZones[3].id
  topic: privateZones[4].id
}
