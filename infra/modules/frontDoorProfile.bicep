// The Front Door Standard profile (deployed before the regions: each function app admits only requests that carry
// this profile's ID in X-Azure-FDID). Endpoint, origins and routes: frontDoor.bicep.

@description('Tags for every resource.')
param tags object = {}

@description('Front Door profile name.')
param profileName string

@description('Log Analytics workspace resource ID for diagnostic settings.')
param logAnalyticsWorkspaceId string

resource profile 'Microsoft.Cdn/profiles@2024-02-01' = {
  name: profileName
  location: 'global'
  tags: tags
  sku: {
    name: 'Standard_AzureFrontDoor'
  }
}

resource frontDoorDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: profile
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

output profileName string = profile.name
output frontDoorId string = profile.properties.frontDoorId
