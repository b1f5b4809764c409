package hub

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/dpsagent/dpsagent/mqtt"
)

// The topic filters a session subscribes to: exactly the hub's limit of five
// (reference §2.1 "Limits"). The device-bound filter is per device, so it is
// built by c2dFilter.
const (
	filterTwinResponses = "$iothub/twin/res/#"
	filterDesired       = "$iothub/twin/PATCH/properties/desired/#"
	filterMethods       = "$iothub/methods/POST/#"
	filterCredentials   = "$iothub/credentials/res/#"
)

// Prefixes of the topics the hub publishes to a device.
const (
	prefixTwinResponse   = "$iothub/twin/res/"
	prefixCredentialsRes = "$iothub/credentials/res/"
	prefixDesired        = "$iothub/twin/PATCH/properties/desired/"
	prefixMethod         = "$iothub/methods/POST/"
)

func c2dFilter(deviceID string) string { return "devices/" + deviceID + "/messages/devicebound/#" }

func c2dPrefix(deviceID string) string { return "devices/" + deviceID + "/messages/devicebound/" }

func twinGetTopic(rid string) string { return "$iothub/twin/GET/?$rid=" + rid }

func reportedTopic(rid string) string {
	return "$iothub/twin/PATCH/properties/reported/?$rid=" + rid
}

// methodResponseTopic answers a method; rawRID is echoed as the hub sent it.
func methodResponseTopic(status int, rawRID string) string {
	return "$iothub/methods/res/" + strconv.Itoa(status) + "/?$rid=" + rawRID
}

func issueCertificateTopic(rid string) string {
	return "$iothub/credentials/POST/issueCertificate/?$rid=" + rid
}

// telemetryTopic is devices/{id}/messages/events/ followed by the property
// bag (reference §2.2).
func telemetryTopic(deviceID string, props map[string]string) (string, error) {
	bag, err := encodePropertyBag(props)
	if err != nil {
		return "", err
	}
	return "devices/" + deviceID + "/messages/events/" + bag, nil
}

var errTopic = errors.New("unexpected topic")

// responseTopic is a parsed $iothub/{twin,credentials}/res/{status}/?{query}.
type responseTopic struct {
	status int
	rid    string
	topic  mqtt.Topic
}

// parseResponseTopic reads a twin or credential answer's topic. The query is
// parsed by name: the hub adds parameters ($version, and for the credential
// API others have been seen), in no promised order.
func parseResponseTopic(topic, prefix string) (responseTopic, error) {
	t, err := mqtt.ParseTopic(topic)
	if err != nil {
		return responseTopic{}, fmt.Errorf("%w %q: %w", errTopic, clip(topic), err)
	}
	status, err := t.Status(prefix)
	if err != nil {
		return responseTopic{}, fmt.Errorf("%w %q: %w", errTopic, clip(topic), err)
	}
	rid, ok := t.RequestID()
	if !ok || rid == "" {
		return responseTopic{}, fmt.Errorf("%w %q: no $rid", errTopic, clip(topic))
	}
	return responseTopic{status: status, rid: rid, topic: t}, nil
}

// methodTopic is a parsed $iothub/methods/POST/{name}/?$rid={rid}. The rid
// is kept as sent, to be echoed verbatim in the answer's topic.
type methodTopic struct {
	name   string
	rawRID string
}

func parseMethodTopic(topic string) (methodTopic, error) {
	t, err := mqtt.ParseTopic(topic)
	if err != nil {
		return methodTopic{}, fmt.Errorf("%w %q: %w", errTopic, clip(topic), err)
	}
	rest, ok := strings.CutPrefix(t.Path, prefixMethod)
	if !ok {
		return methodTopic{}, fmt.Errorf("%w %q: want %s{method}/?$rid={rid}", errTopic, clip(topic), prefixMethod)
	}
	name := strings.TrimSuffix(rest, "/")
	if name == "" || strings.Contains(name, "/") {
		return methodTopic{}, fmt.Errorf("%w %q: no single method name", errTopic, clip(topic))
	}
	_, rawQuery, _ := strings.Cut(topic, "?")
	rid := rawQueryValue(rawQuery, "$rid")
	// The rid goes back into the answer's topic: anything but printable
	// ASCII, or a wildcard or level separator, would make that topic invalid.
	if rid == "" || strings.ContainsAny(rid, "/#+") || strings.ContainsFunc(rid, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return methodTopic{}, fmt.Errorf("%w %q: no usable $rid", errTopic, clip(topic))
	}
	return methodTopic{name: name, rawRID: rid}, nil
}

// rawQueryValue is the first value of name in query, as written.
func rawQueryValue(query, name string) string {
	for field := range strings.SplitSeq(query, "&") {
		if k, v, _ := strings.Cut(field, "="); k == name {
			return v
		}
	}
	return ""
}

// parseDesiredTopic reads $iothub/twin/PATCH/properties/desired/?$version={n}.
// The version is optional here (ok false): the body's $version is the one
// that counts.
func parseDesiredTopic(topic string) (version int, ok bool, err error) {
	t, err := mqtt.ParseTopic(topic)
	if err != nil {
		return 0, false, fmt.Errorf("%w %q: %w", errTopic, clip(topic), err)
	}
	if t.Path != prefixDesired && t.Path != strings.TrimSuffix(prefixDesired, "/") {
		return 0, false, fmt.Errorf("%w %q: want %s?$version={n}", errTopic, clip(topic), prefixDesired)
	}
	v, ok, err := t.Version()
	if err != nil {
		return 0, false, fmt.Errorf("%w %q: %w", errTopic, clip(topic), err)
	}
	if !ok {
		return 0, false, nil
	}
	if v > maxVersion {
		return 0, false, fmt.Errorf("%w %q: $version %d is out of range", errTopic, clip(topic), v)
	}
	return int(v), true, nil
}

// parseC2DTopic reads devices/{id}/messages/devicebound/{property-bag}.
func parseC2DTopic(topic, deviceID string) (map[string]string, error) {
	bag, ok := strings.CutPrefix(topic, c2dPrefix(deviceID))
	if !ok {
		// The hub writes the bag right after "devicebound" when it is empty.
		if topic == strings.TrimSuffix(c2dPrefix(deviceID), "/") {
			return map[string]string{}, nil
		}
		return nil, fmt.Errorf("%w %q: want %s{properties}", errTopic, clip(topic), c2dPrefix(deviceID))
	}
	props, err := parsePropertyBag(bag)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", errTopic, clip(topic), err)
	}
	return props, nil
}

// maxVersion bounds twin versions so they fit an int on every platform the
// agent builds for (armv7 included); the hub's are far smaller.
const maxVersion = 1<<31 - 1

// parsePropertyBag decodes "k=v&k2=v2": keys and values percent-encoded, a
// key without '=' a property whose value is null (kept as ""). '+' stays a
// plus sign: the SDKs encode spaces as %20. The first occurrence of a key
// wins.
func parsePropertyBag(bag string) (map[string]string, error) {
	out := map[string]string{}
	for field := range strings.SplitSeq(bag, "&") {
		if field == "" {
			continue
		}
		k, v, _ := strings.Cut(field, "=")
		key, err := url.PathUnescape(k)
		if err != nil {
			return nil, fmt.Errorf("property name %q: %w", clip(k), err)
		}
		if key == "" {
			return nil, fmt.Errorf("property %q has no name", clip(field))
		}
		val, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("property %q: %w", clip(key), err)
		}
		if _, dup := out[key]; !dup {
			out[key] = val
		}
	}
	return out, nil
}

// encodePropertyBag is the inverse of parsePropertyBag, keys sorted so a
// message's topic is deterministic. System properties keep their literal
// "$." prefix, as the SDKs write them ($.ct=application%2Fjson).
func encodePropertyBag(props map[string]string) (string, error) {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(props)) {
		if k == "" || k == "$." {
			return "", errors.New("a message property has an empty name")
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		if rest, ok := strings.CutPrefix(k, "$."); ok {
			b.WriteString("$." + mqtt.Escape(rest))
		} else {
			b.WriteString(mqtt.Escape(k))
		}
		b.WriteByte('=')
		b.WriteString(mqtt.Escape(props[k]))
	}
	return b.String(), nil
}

// clip shortens hub-supplied text for error messages, so a hostile topic
// cannot flood the logs.
func clip(s string) string {
	const maxLen = 96
	if len(s) > maxLen {
		return s[:maxLen] + "..."
	}
	return s
}
