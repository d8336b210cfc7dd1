// The Front Door Premium profile (global resource group; deployed before the regions: each function app admits only
// requests that carry this profile's ID in X-Azure-FDID). Premium, not Standard: the WAF's managed rule sets and
// Private Link origins (the apps and the inboxes stay off the public internet) exist only there.
// Endpoints, origins, routes, the WAF policy and its security policy: frontDoor.bicep.

@description('Tags for every resource.')
param tags object = {}

@description('Front Door profile name.')
param profileName string

@description('Log Analytics workspace resource ID for diagnostic settings (the global workspace).')
param logAnalyticsWorkspaceId string

@description('Seconds Front Door waits for an origin\'s answer (STOW-RS of a large study, a retrieve of a whole series).')
@minValue(16)
@maxValue(240)
param originResponseTimeoutSeconds int = 120

resource profile 'Microsoft.Cdn/profiles@2024-02-01' = {
  name: profileName
  location: 'global'
  tags: tags
  sku: {
    name: 'Premium_AzureFrontDoor'
  }
  properties: {
    originResponseTimeoutSeconds: originResponseTimeoutSeconds
  }
}

// Health probes and WAF decisions only. Not the access log: it records every request URI with its query string,
// and QIDO query strings carry patient names and IDs (the WAF log scrubs them: frontDoor.bicep). Request counts,
// 5xx rates and origin health come from the platform metrics, which hold no URI (the alerts read those).
resource frontDoorDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: profile
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'FrontDoorHealthProbeLog'
        enabled: true
      }
      {
        category: 'FrontDoorWebApplicationFirewallLog'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output id string = profile.id
output profileName string = profile.name
output frontDoorId string = profile.properties.frontDoorId
