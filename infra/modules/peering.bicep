// One direction of the global peering between the two regions' networks (main.bicep privateNetworking deploys
// both): the follower in each region reaches the peer's table endpoint through the peer's private endpoint.

@description('This region\'s virtual network.')
param vnetName string

@description('Resource ID of the other region\'s virtual network.')
param remoteVnetId string

resource vnet 'Microsoft.Network/virtualNetworks@2025-07-01' existing = {
  name: vnetName
}

resource peering 'Microsoft.Network/virtualNetworks/virtualNetworkPeerings@2025-07-01' = {
  parent: vnet
  name: 'to-peer-region'
  properties: {
    remoteVirtualNetwork: {
      id: remoteVnetId
    }
    allowVirtualNetworkAccess: true
    allowForwardedTraffic: false
    allowGatewayTransit: false
    useRemoteGateways: false
  }
}
