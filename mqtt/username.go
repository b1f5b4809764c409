package mqtt

import (
	"net/url"
	"strings"
)

// DPSUsername is the MQTT user name for registering with DPS:
// "{idScope}/registrations/{registrationID}/api-version={apiVersion}", then
// "&ClientVersion={clientVersion}" (url-encoded) when clientVersion is set,
// as Microsoft's SDKs send their user agent.
func DPSUsername(idScope, registrationID, apiVersion, clientVersion string) string {
	s := idScope + "/registrations/" + registrationID + "/api-version=" + Escape(apiVersion)
	if clientVersion != "" {
		s += "&ClientVersion=" + Escape(clientVersion)
	}
	return s
}

// HubUsername is the MQTT user name for IoT Hub:
// "{hubHost}/{deviceID}/?api-version={apiVersion}", then
// "&DeviceClientType={clientType}" (url-encoded) when clientType is set.
func HubUsername(hubHost, deviceID, apiVersion, clientType string) string {
	s := hubHost + "/" + deviceID + "/?api-version=" + Escape(apiVersion)
	if clientType != "" {
		s += "&DeviceClientType=" + Escape(clientType)
	}
	return s
}

// Escape percent-encodes s for a user name or a topic's property bag the way
// the Azure SDKs do: every byte but the unreserved characters A-Z a-z 0-9
// - _ . ~ becomes %XX, and a space is %20, never '+'.
func Escape(s string) string {
	// QueryEscape already leaves exactly the unreserved set alone and turns
	// a '+' into %2B, so any '+' it outputs stands for a space.
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}
