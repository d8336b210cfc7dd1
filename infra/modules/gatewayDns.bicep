// The one name modalities keep for the DIMSE gateway (global resource group): dimse.<zone>, an A record with a short
// TTL pointing at the gateway of the region that takes uploads (ingestRegion). Each gateway also has its own name
// (dimse-primary, dimse-secondary) for modalities that configure two destinations instead.
// A private DNS zone, not Traffic Manager: the gateways listen on internal addresses (reached over VPN or
// ExpressRoute), which Traffic Manager's probes on the internet cannot reach, and a private zone answers only inside
// the linked networks. The switch is the runbook's (docs/deploy.md): one record change in this global group, which
// stays manageable while the primary region is lost; the "gateway unreachable" alert says when.

@description('Tags for every resource.')
param tags object = {}

@description('The private DNS zone (e.g. dicomflow-prod.internal); the hospital\'s DNS forwards it to a DNS private resolver.')
param zoneName string

@description('Internal address of the primary region\'s gateway.')
param primaryAddress string

@description('Internal address of the secondary region\'s gateway.')
param secondaryAddress string

@description('The region whose gateway the name points at.')
@allowed([
  'primary'
  'secondary'
])
param ingestRegion string = 'primary'

@description('Networks that resolve the zone (the gateways\' networks; link the resolver\'s network too).')
param vnetIds array

@description('Seconds a resolver may keep the answer: how long a modality may still reach the old gateway after the switch.')
@minValue(5)
@maxValue(3600)
param ttlSeconds int = 30

resource zone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: zoneName
  location: 'global'
  tags: tags
}

resource links 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (id, i) in vnetIds: {
  parent: zone
  name: 'gateway-${i}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: id
    }
  }
}]

resource dimse 'Microsoft.Network/privateDnsZones/A@2024-06-01' = {
  parent: zone
  name: 'dimse'
  properties: {
    ttl: ttlSeconds
    aRecords: [
      {
        ipv4Address: ingestRegion == 'primary' ? primaryAddress : secondaryAddress
      }
    ]
  }
}

resource dimsePrimary 'Microsoft.Network/privateDnsZones/A@2024-06-01' = {
  parent: zone
  name: 'dimse-primary'
  properties: {
    ttl: ttlSeconds
    aRecords: [
      {
        ipv4Address: primaryAddress
      }
    ]
  }
}

resource dimseSecondary 'Microsoft.Network/privateDnsZones/A@2024-06-01' = {
  parent: zone
  name: 'dimse-secondary'
  properties: {
    ttl: ttlSeconds
    aRecords: [
      {
        ipv4Address: secondaryAddress
      }
    ]
  }
}

output name string = '${dimse.name}.${zone.name}'
output ttlSeconds int = ttlSeconds
