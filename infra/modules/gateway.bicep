// The DIMSE gateway (gateway/, `python -m gateway`): a Container App with TCP ingress on 11112, internal to
// its own virtual network by default (reach it over VPN / ExpressRoute by peering that network), running as
// its own user-assigned identity. The identity's roles (blob read/write on the data account for the inbox,
// archive and config; table read for the index; Key Vault secrets for the TLS certificate) are assigned in
// roleAssignments.bicep, like every role. No keys: logs go to Azure Monitor through a diagnostic setting.

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Container Apps environment name.')
param environmentName string

@description('Container App name.')
param name string

@description('Virtual network name (the environment\'s infrastructure subnet lives in it).')
param vnetName string

@description('Address space of the gateway\'s virtual network; peer it with the hospital network.')
param addressPrefix string = '10.90.0.0/24'

@description('Infrastructure subnet of the environment (workload profiles: /27 or larger).')
param subnetPrefix string = '10.90.0.0/27'

@description('Resource ID of the gateway\'s user-assigned identity.')
param identityId string

@description('Client ID of that identity (DicomStorage__clientId).')
param identityClientId string

@description('Container image of the gateway (built from the repository\'s Dockerfile).')
param image string

@description('Data account blob endpoint (inbox, archive, config).')
param dataBlobEndpoint string

@description('Data account table endpoint (the index).')
param dataTableEndpoint string

@description('Log Analytics workspace for the environment\'s logs.')
param logAnalyticsWorkspaceId string

@description('This region\'s key (DICOMFLOW_REGION): the archive it serves is dicom-archive-<key>, plus the peer\'s replica.')
param regionKey string

@description('The peer region\'s key (DICOMFLOW_PEER_REGION).')
param peerRegionKey string

@description('Called AE title of the gateway.')
param aeTitle string = 'DICOMFLOW'

@description('Calling AE titles allowed to associate (comma-separated; empty: any).')
param allowedAeTitles string = ''

@description('Source networks allowed to connect (comma-separated CIDRs; empty: any that reach the port).')
param allowedNetworks string = ''

@description('Key Vault secret URI of the TLS certificate (PEM with its key); empty: plain TCP (internal only).')
param tlsCertificateSecretUri string = ''

@description('Expose the TCP port outside the virtual network (default: internal only).')
param externalIngress bool = false

@description('Most replicas (C-STORE is stateless; each replica holds its own associations).')
@minValue(1)
@maxValue(10)
param maxReplicas int = 3

var port = 11112
var tls = !empty(tlsCertificateSecretUri)
var tlsEnv = tls ? [
  {
    name: 'DICOMFLOW_GATEWAY_TLS_CERT_FILE'
    value: '/certs/gateway-tls'
  }
] : []

resource vnet 'Microsoft.Network/virtualNetworks@2025-07-01' = {
  name: vnetName
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
        name: 'gateway'
        properties: {
          addressPrefix: subnetPrefix
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

resource environment 'Microsoft.App/managedEnvironments@2025-07-01' = {
  name: environmentName
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'azure-monitor'
    }
    vnetConfiguration: {
      infrastructureSubnetId: vnet.properties.subnets[0].id
      internal: !externalIngress
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
    zoneRedundant: false
  }
}

resource environmentLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: environment
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

resource app 'Microsoft.App/containerApps@2025-07-01' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    environmentId: environment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: externalIngress
        transport: 'tcp'
        targetPort: port
        exposedPort: port
      }
      secrets: tls ? [
        {
          name: 'gateway-tls'
          keyVaultUrl: tlsCertificateSecretUri
          identity: identityId
        }
      ] : []
    }
    template: {
      containers: [
        {
          name: 'gateway'
          image: image
          resources: {
            cpu: json('1.0')
            memory: '2Gi'
          }
          env: concat([
            {
              name: 'DicomStorage__blobServiceUri'
              value: dataBlobEndpoint
            }
            {
              name: 'DicomStorage__tableServiceUri'
              value: dataTableEndpoint
            }
            {
              name: 'DicomStorage__clientId'
              value: identityClientId
            }
            {
              name: 'DICOMFLOW_REGION'
              value: regionKey
            }
            {
              name: 'DICOMFLOW_PEER_REGION'
              value: peerRegionKey
            }
            {
              name: 'DICOMFLOW_GATEWAY_HOST'
              value: '0.0.0.0'
            }
            {
              name: 'DICOMFLOW_GATEWAY_PORT'
              value: string(port)
            }
            {
              name: 'DICOMFLOW_GATEWAY_AE_TITLE'
              value: aeTitle
            }
            {
              name: 'DICOMFLOW_GATEWAY_ALLOWED_AE_TITLES'
              value: allowedAeTitles
            }
            {
              name: 'DICOMFLOW_GATEWAY_ALLOWED_NETWORKS'
              value: allowedNetworks
            }
          ], tlsEnv)
          volumeMounts: tls ? [
            {
              volumeName: 'certs'
              mountPath: '/certs'
            }
          ] : []
          probes: [
            {
              type: 'Liveness'
              tcpSocket: {
                port: port
              }
              periodSeconds: 30
            }
          ]
        }
      ]
      volumes: tls ? [
        {
          name: 'certs'
          storageType: 'Secret'
          secrets: [
            {
              secretRef: 'gateway-tls'
              path: 'gateway-tls'
            }
          ]
        }
      ] : []
      scale: {
        minReplicas: 1
        maxReplicas: maxReplicas
      }
    }
  }
}

output name string = app.name
output fqdn string = app.properties.configuration.ingress.fqdn
output vnetId string = vnet.id
