// The OHIF viewer as an Azure Static Web App. azd's 'viewer' service uploads viewer/site (the prebuilt
// @ohif/app dist plus an app-config.js made by 'python -m viewer build' for this deployment: DICOMweb at the
// Front Door endpoint, OpenID Connect sign-in against Entra ID). The viewer holds no secret: it is a public
// client (authorization code + PKCE) and the API checks every token.

@description('Azure region (Static Web Apps is offered in a few regions only).')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Static web app name.')
param name string

@description('Free is enough for a static viewer (250 MB of content; the site is about 60 MB). Standard adds custom authentication, private endpoints and an SLA.')
@allowed([
  'Free'
  'Standard'
])
param skuName string = 'Free'

resource site 'Microsoft.Web/staticSites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'viewer'
  })
  sku: {
    name: skuName
    tier: skuName
  }
  properties: {
    // Content comes from azd (the Static Web Apps CLI), not from a linked repository.
    allowConfigFileUpdates: true
    stagingEnvironmentPolicy: 'Disabled'
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostname
