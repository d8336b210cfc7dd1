// The DIMSE gateway (gateway/, `python -m gateway`): a Container App with TCP ingress on 11112, internal to
// its region's network (privateNetworking; else a network of its own) by default (reach it over VPN / ExpressRoute),
// zone redundant with two replicas, running as its own user-assigned identity. One per region, behind one name
// (gatewayDns.bicep). The identity's roles (write the inbox container, read the archive and configuration
// containers, read the index tables, read its TLS secret and the audit patient salt secret) are assigned in
// roleAssignments.bicep, like every role. No keys: logs go to Azure Monitor through a diagnostic setting.
// It listens beyond loopback (0.0.0.0 in the container) only with an AE allow-list or mutual TLS, the same rule the
// gateway enforces at startup, twice over: the caller must state how it is admitted (parameter admission, whose
// allowed values name no open gateway, so a deployment without either fails with the reason), and without either
// the container would bind to loopback alone (unreachable, never open).

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Container Apps environment name.')
param environmentName string

@description('Container App name.')
param name string

@description('Virtual network name, when the gateway gets a network of its own (no subnetId).')
param vnetName string

@description('Infrastructure subnet in the region\'s network (privateNetworking: it reaches the private endpoints there); empty: a network of its own.')
param subnetId string = ''

@description('Spread the environment and its replicas over availability zones.')
param zoneRedundant bool = true

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

@description('Data account queue endpoint (the batched ingest path\'s chunk messages: shared/ingest/batch.py).')
param dataQueueEndpoint string

@description('Log Analytics workspace for the environment\'s logs.')
param logAnalyticsWorkspaceId string

@description('This region\'s key (DICOMFLOW_REGION): the archive it serves is dicom-archive-<key>, plus the peer\'s replica.')
param regionKey string

@description('The peer region\'s key (DICOMFLOW_PEER_REGION).')
param peerRegionKey string

@description('Called AE title of the gateway.')
param aeTitle string = 'DICOMFLOW'

@description('Calling AE titles allowed to associate (comma-separated). Empty only with mutual TLS.')
param allowedAeTitles string = ''

@description('How clients are admitted, as the caller computed it from allowedAeTitles and the TLS parameters. No allowed value means "open": a caller with neither an allow-list nor mutual TLS passes a sentence saying so, and Azure refuses the deployment with it.')
@allowed([
  'allow-list'
  'mutual TLS'
  'allow-list and mutual TLS'
])
param admission string

@description('Source networks allowed to connect (comma-separated CIDRs; empty: any that reach the port).')
param allowedNetworks string = ''

@description('Key Vault secret URI of the TLS certificate (PEM with its key); empty: plain TCP (internal only).')
param tlsCertificateSecretUri string = ''

@description('PEM of the CA that signs clients\' certificates (public); with the certificate it makes TLS mutual. Empty: none.')
param tlsClientCaCertificate string = ''

@description('Key Vault secret URI (no version) of the audit trail\'s patient salt: a Container Apps secret read with the gateway\'s identity, given to the container as DICOMFLOW_AUDIT_PATIENT_SALT.')
param auditPatientSaltSecretUri string

@description('Expose the TCP port outside the virtual network (default: internal only).')
param externalIngress bool = false

@description('Fewest replicas: two, so a zone (or a replica) lost leaves one answering.')
@minValue(1)
@maxValue(10)
param minReplicas int = 2

@description('Most replicas (C-STORE is stateless; each replica holds its own associations).')
@minValue(1)
@maxValue(10)
param maxReplicas int = 3

var port = 11112
var tls = !empty(tlsCertificateSecretUri)
var mutualTls = tls && !empty(tlsClientCaCertificate)
var ownNetwork = empty(subnetId)
var tlsEnv = tls ? [
  {
    name: 'DICOMFLOW_GATEWAY_TLS_CERT_FILE'
    value: '/certs/gateway-tls'
  }
] : []
// Beyond loopback only when admitted: an AE allow-list or mutual TLS (admission says which; this holds regardless).
var admitted = !empty(allowedAeTitles) || mutualTls
var caEnv = mutualTls ? [
  {
    name: 'DICOMFLOW_GATEWAY_TLS_CA_FILE'
    value: '/certs/gateway-ca'
  }
] : []
var certSecrets = tls ? [
  {
    name: 'gateway-tls'
    keyVaultUrl: tlsCertificateSecretUri
    identity: identityId
  }
] : []
// The audit trail's patient salt: from Key Vault with the gateway's identity (Key Vault Secrets User on that one
// secret), the same secret as the function app's, so both write and find the same patient digests.
var saltSecrets = [
  {
    name: 'audit-patient-salt'
    keyVaultUrl: auditPatientSaltSecretUri
    identity: identityId
  }
]
// Container Apps mounts files only from its secrets; the CA certificate is public, so it is given as a value.
var caSecrets = mutualTls ? [
  {
    name: 'gateway-ca'
    value: tlsClientCaCertificate
  }
] : []
var certFiles = tls ? [
  {
    secretRef: 'gateway-tls'
    path: 'gateway-tls'
  }
] : []
var caFiles = mutualTls ? [
  {
    secretRef: 'gateway-ca'
    path: 'gateway-ca'
  }
] : []

resource vnet 'Microsoft.Network/virtualNetworks@2025-07-01' = if (ownNetwork) {
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
      infrastructureSubnetId: ownNetwork ? vnet!.properties.subnets[0].id : subnetId
      internal: !externalIngress
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
    zoneRedundant: zoneRedundant
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
      secrets: concat(certSecrets, caSecrets, saltSecrets)
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
              name: 'DicomStorage__queueServiceUri'
              value: dataQueueEndpoint
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
              // Every interface (the environment's load balancer forwards to it) only when admitted; else loopback.
              name: 'DICOMFLOW_GATEWAY_HOST'
              value: admitted ? '0.0.0.0' : '127.0.0.1'
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
            {
              name: 'DICOMFLOW_AUDIT_PATIENT_SALT'
              secretRef: 'audit-patient-salt'
            }
          ], tlsEnv, caEnv)
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
          secrets: concat(certFiles, caFiles)
        }
      ] : []
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
      }
    }
  }
}

output name string = app.name
output id string = app.id
output fqdn string = app.properties.configuration.ingress.fqdn
// The environment's internal load balancer address: the gateway name (gatewayDns.bicep) points here.
output staticIp string = environment.properties.staticIp
// The network the gateway lives in (the gateway name's zone is linked to it).
output vnetId string = ownNetwork ? vnet!.id : join(take(split(subnetId, '/'), 9), '/')
