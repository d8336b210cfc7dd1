#!/bin/sh
# azd postdeploy hook (or run by hand after stage 1 with the same variables exported):
#  1. deploy the app package to the secondary function app (azd deploys the primary one),
#  2. wait until both apps expose the blobs_extension system key (the Event Grid blob trigger is indexed),
#  3. deploy stage 2: the Event Grid subscriptions of infra/events.json in both regions.
# Needs: az (logged in), git, and the stage 1 outputs as environment variables (azd sets them).
set -eu
cd "$(dirname "$0")/../.."

: "${AZURE_ENV_NAME:?run through azd, or export the stage 1 outputs}"
: "${AZURE_LOCATION:?}"
: "${PRIMARY_RESOURCE_GROUP:?}" "${SECONDARY_RESOURCE_GROUP:?}"
: "${PRIMARY_FUNCTION_APP_NAME:?}" "${SECONDARY_FUNCTION_APP_NAME:?}"

package="$(mktemp -d)/dicomflow.zip"
# The committed files minus what .funcignore excludes (the same set azd deploys to the primary app).
pattern="^($(grep -v -e '^#' -e '^$' .funcignore | sed -e 's/\./\\./g' -e 's/\*/.*/g' | paste -sd '|' -))(/|$)"
# shellcheck disable=SC2046 # file names in this repo have no spaces
git archive --format=zip -o "$package" HEAD -- $(git ls-files | grep -v -E "$pattern")
echo "Deploying $package to $SECONDARY_FUNCTION_APP_NAME (secondary region)"
az functionapp deployment source config-zip --resource-group "$SECONDARY_RESOURCE_GROUP" \
  --name "$SECONDARY_FUNCTION_APP_NAME" --src "$package" --build-remote true --output none

wait_for_blobs_key() {
  # $1 resource group, $2 app. Bounded: 30 tries, 10 s apart.
  tries=0
  while [ "$tries" -lt 30 ]; do
    key="$(az functionapp keys list --resource-group "$1" --name "$2" \
      --query systemKeys.blobs_extension --output tsv 2>/dev/null || true)"
    if [ -n "$key" ]; then
      echo "$2: blobs_extension key present"
      return 0
    fi
    tries=$((tries + 1))
    sleep 10
  done
  echo "$2: no blobs_extension system key after 5 minutes; is the ingest function (blob trigger, source EventGrid) deployed?" >&2
  return 1
}
wait_for_blobs_key "$PRIMARY_RESOURCE_GROUP" "$PRIMARY_FUNCTION_APP_NAME"
wait_for_blobs_key "$SECONDARY_RESOURCE_GROUP" "$SECONDARY_FUNCTION_APP_NAME"

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
    primaryIdentityName="$PRIMARY_EVENTGRID_IDENTITY_NAME" \
    secondaryIdentityName="$SECONDARY_EVENTGRID_IDENTITY_NAME" \
    primarySystemTopic="$PRIMARY_SYSTEM_TOPIC" \
    secondarySystemTopic="$SECONDARY_SYSTEM_TOPIC" \
    primaryCustomTopic="$PRIMARY_CUSTOM_TOPIC" \
    secondaryCustomTopic="$SECONDARY_CUSTOM_TOPIC"
echo "Done. DICOMweb: ${FRONT_DOOR_ENDPOINT:-<FRONT_DOOR_ENDPOINT>}/api/"
