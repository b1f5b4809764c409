package emulator

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// The topic filters IoT Hub accepts from a device (reference §2.2, §2.3).
// Anything else is refused in the SUBACK.
const (
	hubFilterTwinResponses = "$iothub/twin/res/#"
	hubFilterDesired       = "$iothub/twin/PATCH/properties/desired/#"
	hubFilterMethods       = "$iothub/methods/POST/#"
	hubFilterCredentials   = "$iothub/credentials/res/#"
	// azure-sdk-for-c subscribes to C2D with a wildcard device ID.
	hubFilterC2DAnyDevice = "devices/+/messages/devicebound/#"
)

// hubMaxSubscriptions is IoT Hub's limit of topics one device may be
// subscribed to at a time (reference §2.1 "Limits").
const hubMaxSubscriptions = 5

// hubFilterAllowed reports whether deviceID may subscribe to filter.
func hubFilterAllowed(filter, deviceID string) bool {
	switch filter {
	case hubFilterTwinResponses, hubFilterDesired, hubFilterMethods, hubFilterCredentials, hubFilterC2DAnyDevice:
		return true
	}
	return filter == "devices/"+deviceID+"/messages/devicebound/#"
}

// hubQuery is the query part of a request or response topic ("?$rid=1&x=y").
// Values are kept as sent, because the hub echoes $rid verbatim in its
// answer, and decoded, for checks.
type hubQuery struct {
	raw     map[string]string
	decoded map[string]string
}

// get returns the decoded and the raw value of key.
func (q hubQuery) get(key string) (decoded, raw string, ok bool) {
	raw, ok = q.raw[key]
	return q.decoded[key], raw, ok
}

// parseHubQuery reads "k=v&k2=v2". Parameters are looked up by name, never by
// position: SDKs order them differently and services add new ones (reference
// §1.3 notes, §2.3 "Response topic"). The first occurrence of a name wins.
func parseHubQuery(s string) (hubQuery, error) {
	q := hubQuery{raw: map[string]string{}, decoded: map[string]string{}}
	for field := range strings.SplitSeq(s, "&") {
		if field == "" {
			continue
		}
		k, v, _ := strings.Cut(field, "=")
		key, err := url.PathUnescape(k)
		if err != nil {
			return hubQuery{}, fmt.Errorf("query parameter %q: %w", k, err)
		}
		val, err := url.PathUnescape(v)
		if err != nil {
			return hubQuery{}, fmt.Errorf("query parameter %q: %w", key, err)
		}
		if _, dup := q.raw[key]; dup {
			continue
		}
		q.raw[key], q.decoded[key] = v, val
	}
	return q, nil
}

// hubSplitTopicQuery splits "path/?query" into the path without its trailing
// slash and the query. SDKs all write "/?"; a bare "?" is accepted too.
func hubSplitTopicQuery(topic string) (path, query string) {
	path, query, _ = strings.Cut(topic, "?")
	return strings.TrimSuffix(path, "/"), query
}

// hubRequestKind is what a device's PUBLISH asks for.
type hubRequestKind int

const (
	hubUnsupported hubRequestKind = iota
	hubTelemetry
	hubTwinGet
	hubTwinPatchReported
	hubMethodResponse
	hubIssueCertificate
)

// hubRequest is a device's PUBLISH topic, classified.
type hubRequest struct {
	kind hubRequestKind
	// Telemetry: the device ID in the topic and the property bag.
	deviceID   string
	properties map[string]string
	// Method responses: the device's status.
	status int
	// Twin, method and credential requests: the query ($rid).
	query hubQuery
}

var errHubTopic = errors.New("topic not supported by IoT Hub")

// parseHubTopic classifies a topic a device published to. Unsupported topics
// and malformed property bags are errors: IoT Hub closes the connection of a
// device that publishes to a topic it does not serve.
func parseHubTopic(topic string) (hubRequest, error) {
	if rest, ok := strings.CutPrefix(topic, "devices/"); ok {
		return hubParseTelemetryTopic(rest)
	}
	if !strings.HasPrefix(topic, "$iothub/") {
		return hubRequest{}, fmt.Errorf("%w: %q", errHubTopic, topic)
	}
	path, rawQuery := hubSplitTopicQuery(topic)
	var req hubRequest
	switch {
	case path == "$iothub/twin/GET":
		req.kind = hubTwinGet
	case path == "$iothub/twin/PATCH/properties/reported":
		req.kind = hubTwinPatchReported
	case path == "$iothub/credentials/POST/issueCertificate":
		req.kind = hubIssueCertificate
	case strings.HasPrefix(path, "$iothub/methods/res/"):
		status, err := strconv.Atoi(strings.TrimPrefix(path, "$iothub/methods/res/"))
		if err != nil {
			return hubRequest{}, fmt.Errorf("%w: method response status in %q is not a number", errHubTopic, topic)
		}
		req.kind, req.status = hubMethodResponse, status
	default:
		return hubRequest{}, fmt.Errorf("%w: %q", errHubTopic, topic)
	}
	q, err := parseHubQuery(rawQuery)
	if err != nil {
		return hubRequest{}, fmt.Errorf("%w: %q: %w", errHubTopic, topic, err)
	}
	req.query = q
	return req, nil
}

// hubParseTelemetryTopic reads "{deviceId}/messages/events/{property-bag}" (the
// part after "devices/"). The trailing slash is optional when there is no bag.
func hubParseTelemetryTopic(rest string) (hubRequest, error) {
	deviceID, tail, ok := strings.Cut(rest, "/")
	if !ok || deviceID == "" {
		return hubRequest{}, fmt.Errorf("%w: %q", errHubTopic, "devices/"+rest)
	}
	if strings.HasPrefix(tail, "modules/") {
		return hubRequest{}, fmt.Errorf("%w: module telemetry (devices/%s/%s): modules are not emulated", errHubTopic, deviceID, tail)
	}
	var bag string
	switch {
	case tail == "messages/events":
	case strings.HasPrefix(tail, "messages/events/"):
		bag = strings.TrimPrefix(tail, "messages/events/")
	default:
		return hubRequest{}, fmt.Errorf("%w: %q (devices publish telemetry to devices/{id}/messages/events/)", errHubTopic, "devices/"+rest)
	}
	props, err := hubParsePropertyBag(bag)
	if err != nil {
		return hubRequest{}, fmt.Errorf("telemetry property bag of %s: %w", deviceID, err)
	}
	return hubRequest{kind: hubTelemetry, deviceID: deviceID, properties: props}, nil
}

// hubParsePropertyBag decodes a telemetry property bag: url-encoded key=value
// pairs joined by '&' (reference §2.2). A key without '=' is a property whose
// value is null; it is kept with an empty value. Escapes are decoded as in a
// URL path: a topic name cannot hold '+' (a wildcard), so the SDKs send %20
// for a space and %2B for a plus.
func hubParsePropertyBag(bag string) (map[string]string, error) {
	props := map[string]string{}
	for field := range strings.SplitSeq(bag, "&") {
		if field == "" {
			continue
		}
		k, v, _ := strings.Cut(field, "=")
		key, err := url.PathUnescape(k)
		if err != nil {
			return nil, fmt.Errorf("property name %q: %w", k, err)
		}
		if key == "" {
			return nil, fmt.Errorf("property %q has no name", field)
		}
		val, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("property %q: %w", key, err)
		}
		props[key] = val
	}
	return props, nil
}

// hubUsername is the MQTT user name a device sends to IoT Hub:
// "{hubHost}/{deviceId}/?api-version={ver}&DeviceClientType=...&model-id=..."
// (reference §2.1 "Username").
type hubUsername struct {
	Host       string
	DeviceID   string
	ModuleID   string // "{hubHost}/{deviceId}/{moduleId}/?..." for modules
	APIVersion string // "" when the device sent none
	ClientType string // DeviceClientType, the SDK's user agent
	ModelID    string // model-id, an IoT Plug and Play DTDL model
}

var errHubUsername = errors.New("malformed IoT Hub user name")

// parseHubUsername reads a device's MQTT user name. Microsoft's Node.js SDK
// writes "/?api-version=", the C SDKs the same; a user name without a query
// (older bare MQTT examples) is taken, with no API version.
func parseHubUsername(s string) (hubUsername, error) {
	path, rawQuery, _ := strings.Cut(s, "?")
	parts := strings.Split(strings.TrimSuffix(path, "/"), "/")
	if len(parts) < 2 || len(parts) > 3 {
		return hubUsername{}, fmt.Errorf("%w: %q: want {hub host}/{device ID}/?api-version={version}", errHubUsername, s)
	}
	u := hubUsername{Host: parts[0], DeviceID: parts[1]}
	if len(parts) == 3 {
		u.ModuleID = parts[2]
	}
	if u.Host == "" || u.DeviceID == "" || (len(parts) == 3 && u.ModuleID == "") {
		return hubUsername{}, fmt.Errorf("%w: %q has an empty host, device or module ID", errHubUsername, s)
	}
	q, err := parseHubQuery(rawQuery)
	if err != nil {
		return hubUsername{}, fmt.Errorf("%w: %q: %w", errHubUsername, s, err)
	}
	u.APIVersion, _, _ = q.get("api-version")
	u.ClientType, _, _ = q.get("DeviceClientType")
	u.ModelID, _, _ = q.get("model-id")
	return u, nil
}

// hubCredentialAPIVersion is the first API version with the credential API
// (reference §2.1 "api-version": the CSR preview SDKs send it).
const hubCredentialAPIVersion = "2025-08-01-preview"

// hubAPIVersionAtLeast compares IoT Hub API versions ("2021-04-12",
// "2025-08-01-preview") by date. A GA version counts as no older than the
// preview of the same date. Anything that is not such a version is older
// than every version.
func hubAPIVersionAtLeast(v, min string) bool {
	date, ok := hubAPIVersionDate(v)
	minDate, _ := hubAPIVersionDate(min)
	return ok && date >= minDate
}

func hubAPIVersionDate(v string) (string, bool) {
	if len(v) < len("2006-01-02") {
		return "", false
	}
	date, suffix := v[:10], v[10:]
	for i, c := range date {
		digit := c >= '0' && c <= '9'
		if (i == 4 || i == 7) != (c == '-') || (i != 4 && i != 7 && !digit) {
			return "", false
		}
	}
	if suffix != "" && !strings.HasPrefix(suffix, "-") {
		return "", false
	}
	return date, true
}
