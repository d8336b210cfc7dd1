#!/bin/sh
# azd postdeploy hook (or run by hand after stage 1 with the same variables exported):
#  1. approve Front Door's Private Link connections to both apps and both data accounts (only requests that name
#     this deployment's Front Door: "Front Door (dicomflow ...)"; anything else stays pending for a human),
#  2. deploy the app package to the secondary function app (azd deploys the primary one),
#  3. wait until both apps expose the blobs_extension and eventgrid_extension system keys (the Event Grid triggers
#     are indexed) and answer through their Front Door hooks endpoints,
#  4. deploy stage 2: the Event Grid subscriptions of infra/events.json in both regions (webhooks through Front Door).
# Needs: az (logged in), git, and the stage 1 outputs as environment variables (azd sets them).
set -eu
cd "$(dirname "$0")/../.."

: "${AZURE_ENV_NAME:?run through azd, or export the stage 1 outputs}"
: "${AZURE_LOCATION:?}"
: "${PRIMARY_RESOURCE_GROUP:?}" "${SECONDARY_RESOURCE_GROUP:?}"
: "${PRIMARY_FUNCTION_APP_NAME:?}" "${SECONDARY_FUNCTION_APP_NAME:?}"
: "${PRIMARY_HOOKS_HOST:?}" "${SECONDARY_HOOKS_HOST:?}"

approve_front_door() {
  # $1 resource ID of an app or a data account. Approves pending connections Front Door requested for dicomflow.
  pending="$(az network private-endpoint-connection list --id "$1" --output tsv --query \
    "[?properties.privateLinkServiceConnectionState.status=='Pending' && contains(properties.privateLinkServiceConnectionState.description, 'Front Door (dicomflow')].id" \
    2>/dev/null || true)"
  for connection in $pending; do
    echo "Approving Front Door's private endpoint connection $connection"
    az network private-endpoint-connection approve --id "$connection" --description "dicomflow: Front Door" --output none
  done
}
for app in "$PRIMARY_RESOURCE_GROUP $PRIMARY_FUNCTION_APP_NAME" "$SECONDARY_RESOURCE_GROUP $SECONDARY_FUNCTION_APP_NAME"; do
  set -- $app
  approve_front_door "$(az functionapp show --resource-group "$1" --name "$2" --query id --output tsv)"
done
for account in "$PRIMARY_RESOURCE_GROUP $PRIMARY_DATA_STORAGE_ACCOUNT" "$SECONDARY_RESOURCE_GROUP $SECONDARY_DATA_STORAGE_ACCOUNT"; do
  set -- $account
  approve_front_door "$(az storage account show --resource-group "$1" --name "$2" --query id --output tsv)"
done

package="$(mktemp -d)/dicomflow.zip"
# The committed files minus what .funcignore excludes (the same set azd deploys to the primary app).
pattern="^($(grep -v -e '^#' -e '^$' .funcignore | sed -e 's/\./\\./g' -e 's/\*/.*/g' | paste -sd '|' -))(/|$)"
# shellcheck disable=SC2046 # file names in this repo have no spaces
git archive --format=zip -o "$package" HEAD -- $(git ls-files | grep -v -E "$pattern")
echo "Deploying $package to $SECONDARY_FUNCTION_APP_NAME (secondary region)"
az functionapp deployment source config-zip --resource-group "$SECONDARY_RESOURCE_GROUP" \
  --name "$SECONDARY_FUNCTION_APP_NAME" --src "$package" --build-remote true --output none

wait_for_keys() {
  # $1 resource group, $2 app. Bounded: 30 tries, 10 s apart. The keys exist once the triggers are indexed.
  tries=0
  while [ "$tries" -lt 30 ]; do
    keys="$(az functionapp keys list --resource-group "$1" --name "$2" \
      --query "[systemKeys.blobs_extension, systemKeys.eventgrid_extension]" --output tsv 2>/dev/null || true)"
    if [ "$(printf '%s\n' $keys | grep -c .)" -eq 2 ]; then
      echo "$2: blobs_extension and eventgrid_extension keys present"
      return 0
    fi
    tries=$((tries + 1))
    sleep 10
  done
  echo "$2: no blobs_extension/eventgrid_extension system key after 5 minutes; are the ingest (blob trigger, source EventGrid) and Event Grid trigger functions deployed?" >&2
  return 1
}
wait_for_hooks() {
  # $1 Front Door hooks host. Bounded: 30 tries, 10 s apart. New endpoints and approved Private Link connections
  # take minutes; Event Grid's validation handshake (stage 2) fails until the app answers through Front Door.
  tries=0
  while [ "$tries" -lt 30 ]; do
    status="$(curl -s -o /dev/null -w '%{http_code}' "https://$1/runtime/webhooks/eventgrid" || true)"
    case "$status" in
      2*|4*) echo "$1: the app answers through Front Door ($status)"; return 0 ;;
    esac
    tries=$((tries + 1))
    sleep 10
  done
  echo "$1: no answer from the app through Front Door after 5 minutes (last status $status); are its Private Link connections approved?" >&2
  return 1
}
wait_for_keys "$PRIMARY_RESOURCE_GROUP" "$PRIMARY_FUNCTION_APP_NAME"
wait_for_keys "$SECONDARY_RESOURCE_GROUP" "$SECONDARY_FUNCTION_APP_NAME"
wait_for_hooks "$PRIMARY_HOOKS_HOST"
wait_for_hooks "$SECONDARY_HOOKS_HOST"

echo "Stage 2: Event Grid subscriptions from infra/events.json"
az deployment sub create --name "dicomflow-stage2-$AZURE_ENV_NAME" --location "$AZURE_LOCATION" \
  --template-file infra/stage2/main.bicep --output none \
  --parameters \
    primaryResourceGroup="$PRIMARY_RESOURCE_GROUP" \
    secondaryResourceGroup="$SECONDARY_RESOURCE_GROUP" \
    primaryFunctionAppName="$PRIMARY_FUNCTION_APP_NAME" \
    secondaryFunctionAppName="$SECONDARY_FUNCTION_APP_NAME" \
    primaryDataStorageAccount="$PRIMARY_DATA_STORAGE_ACCOUNT" \
    secondaryDataStorageAccount="$SECONDARY_DATA_STORAGE_ACCOUNT" \
    primaryHooksHost="$PRIMARY_HOOKS_HOST" \
    secondaryHooksHost="$SECONDARY_HOOKS_HOST" \
    primarySystemTopic="$PRIMARY_SYSTEM_TOPIC" \
    secondarySystemTopic="$SECONDARY_SYSTEM_TOPIC" \
    primaryCustomTopic="$PRIMARY_CUSTOM_TOPIC" \
    secondaryCustomTopic="$SECONDARY_CUSTOM_TOPIC"
echo "Done. DICOMweb: ${FRONT_DOOR_ENDPOINT:-<FRONT_DOOR_ENDPOINT>}/api/"
