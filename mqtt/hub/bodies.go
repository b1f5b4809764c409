package hub

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// maxBody bounds what is parsed from the hub. Its own limits are far lower
// (twin 32 KB, method payloads 128 KB, a certificate chain a few KB); a
// larger body is hostile or broken and is refused before decoding.
const maxBody = 1 << 20

// Limits on an issued chain: the service issues three certificates; a few
// more are tolerated, thousands are not.
const (
	maxChainLen  = 8
	maxCertBytes = 64 << 10
)

// twinDoc is a twin GET answer: {desired:{...,$version}, reported:{...,$version}}.
type twinDoc struct {
	desired, reported               map[string]any
	desiredVersion, reportedVersion int
}

func parseTwin(body []byte) (twinDoc, error) {
	var raw struct {
		Desired  json.RawMessage `json:"desired"`
		Reported json.RawMessage `json:"reported"`
	}
	if err := decodeObject(body, &raw); err != nil {
		return twinDoc{}, fmt.Errorf("twin: %w", err)
	}
	var (
		doc twinDoc
		err error
	)
	if doc.desired, doc.desiredVersion, err = parseSection(raw.Desired); err != nil {
		return twinDoc{}, fmt.Errorf("twin desired section: %w", err)
	}
	if doc.reported, doc.reportedVersion, err = parseSection(raw.Reported); err != nil {
		return twinDoc{}, fmt.Errorf("twin reported section: %w", err)
	}
	return doc, nil
}

// parseDesiredPatch reads a desired-property update. Its $version is in the
// body; the topic's, when there is one, stands in for a body without it.
func parseDesiredPatch(body []byte, topicVersion int, haveTopicVersion bool) (map[string]any, int, error) {
	if len(body) > maxBody {
		return nil, 0, fmt.Errorf("desired update: %w: %d bytes", ErrBadAnswer, len(body))
	}
	props, version, err := parseSectionOptionalVersion(body)
	if errors.Is(err, errNoVersion) && haveTopicVersion {
		return props, topicVersion, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("desired update: %w", err)
	}
	return props, version, nil
}

var errNoVersion = errors.New("no $version")

// parseSection reads a twin section, which must carry its $version; the
// version is removed from the returned properties.
func parseSection(raw json.RawMessage) (map[string]any, int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, 0, fmt.Errorf("%w: missing", ErrBadAnswer)
	}
	props, version, err := parseSectionOptionalVersion(raw)
	if errors.Is(err, errNoVersion) {
		return nil, 0, fmt.Errorf("%w: %w", ErrBadAnswer, err)
	}
	return props, version, err
}

func parseSectionOptionalVersion(raw []byte) (map[string]any, int, error) {
	var props map[string]any
	if err := decodeObject(raw, &props); err != nil {
		return nil, 0, err
	}
	if props == nil {
		return nil, 0, fmt.Errorf("%w: null instead of an object", ErrBadAnswer)
	}
	v, ok := props["$version"]
	if !ok {
		return props, 0, errNoVersion
	}
	delete(props, "$version")
	version, err := jsonVersion(v)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: $version: %w", ErrBadAnswer, err)
	}
	return props, version, nil
}

// jsonVersion accepts a JSON number that is a whole, non-negative int.
func jsonVersion(v any) (int, error) {
	f, ok := v.(float64)
	if !ok {
		return 0, fmt.Errorf("a %s, not a number", jsonType(v))
	}
	if f < 0 || f > maxVersion || f != math.Trunc(f) {
		return 0, fmt.Errorf("%v is not a version number", f)
	}
	return int(f), nil
}

// accepted is the credential API's 202: the operation runs.
type accepted struct {
	correlationID string
	// expires is zero when the hub did not say (or said nonsense).
	expires time.Time
}

func parseAccepted(body []byte) (accepted, error) {
	var raw map[string]json.RawMessage
	if err := decodeObject(body, &raw); err != nil {
		return accepted{}, fmt.Errorf("issueCertificate 202: %w", err)
	}
	a := accepted{correlationID: jsonString(raw["correlationId"])}
	if t, err := time.Parse(time.RFC3339Nano, jsonString(raw["operationExpires"])); err == nil {
		a.expires = t
	}
	return a, nil
}

// parseIssued reads the credential API's 200. Two forms are in use
// (reference §2.3): {"correlationId":..., "certificates":[b64...]} from the
// C# and C SDKs' services, and a bare array [b64...] as azure-sdk-for-c's
// preview parses it. Both are accepted. The chain is DER, leaf first.
func parseIssued(body []byte) ([][]byte, error) {
	if len(body) > maxBody {
		return nil, fmt.Errorf("issueCertificate 200: %w: %d bytes", ErrBadAnswer, len(body))
	}
	var entries []json.RawMessage
	trimmed := bytes.TrimSpace(body)
	switch {
	case len(trimmed) > 0 && trimmed[0] == '[':
		if err := json.Unmarshal(trimmed, &entries); err != nil {
			return nil, fmt.Errorf("issueCertificate 200: %w: %w", ErrBadAnswer, err)
		}
	default:
		var obj struct {
			Certificates []json.RawMessage `json:"certificates"`
		}
		if err := decodeObject(trimmed, &obj); err != nil {
			return nil, fmt.Errorf("issueCertificate 200: %w", err)
		}
		entries = obj.Certificates
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("issueCertificate 200: %w: no certificates", ErrBadAnswer)
	}
	if len(entries) > maxChainLen {
		return nil, fmt.Errorf("issueCertificate 200: %w: %d certificates, at most %d expected", ErrBadAnswer, len(entries), maxChainLen)
	}
	chain := make([][]byte, 0, len(entries))
	for i, e := range entries {
		var s string
		if err := json.Unmarshal(e, &s); err != nil {
			return nil, fmt.Errorf("issueCertificate 200: %w: certificate %d is not a string", ErrBadAnswer, i)
		}
		der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("issueCertificate 200: %w: certificate %d is not base64: %w", ErrBadAnswer, i, err)
		}
		if len(der) == 0 || len(der) > maxCertBytes {
			return nil, fmt.Errorf("issueCertificate 200: %w: certificate %d has %d bytes", ErrBadAnswer, i, len(der))
		}
		chain = append(chain, der)
	}
	return chain, nil
}

// parseErrorBody reads an error answer. Every field is optional and read on
// its own, so a wrong type in one does not hide the others; the status alone
// is enough for an Error.
func parseErrorBody(op string, status int, body []byte) *Error {
	e := &Error{Op: op, Status: status}
	var raw map[string]json.RawMessage
	if len(body) > maxBody || json.Unmarshal(body, &raw) != nil {
		return e
	}
	e.Code = jsonInt(raw["errorCode"])
	e.Message = clip(jsonString(raw["message"]))
	e.TrackingID = clip(jsonString(raw["trackingId"]))
	if secs := jsonInt(raw["retryAfter"]); secs > 0 {
		e.RetryAfter = time.Duration(min(secs, maxRetryAfterSeconds)) * time.Second
	}
	var info map[string]json.RawMessage
	if json.Unmarshal(raw["info"], &info) == nil && info != nil {
		e.Info = &ErrorInfo{
			CorrelationID:     clip(jsonString(info["correlationId"])),
			CredentialError:   clip(jsonString(info["credentialError"])),
			CredentialMessage: clip(jsonString(info["credentialMessage"])),
			RequestID:         clip(jsonString(info["requestId"])),
		}
		if t, err := time.Parse(time.RFC3339Nano, jsonString(info["operationExpires"])); err == nil {
			e.Info.OperationExpires = t
		}
	}
	return e
}

// maxRetryAfterSeconds caps what the hub can ask a device to wait: a day.
const maxRetryAfterSeconds = 24 * 60 * 60

// decodeObject decodes one JSON object into v, refusing oversized bodies and
// anything but an object.
func decodeObject(body []byte, v any) error {
	if len(body) > maxBody {
		return fmt.Errorf("%w: %d bytes", ErrBadAnswer, len(body))
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return fmt.Errorf("%w: not a JSON object", ErrBadAnswer)
	}
	if err := json.Unmarshal(trimmed, v); err != nil {
		return fmt.Errorf("%w: %w", ErrBadAnswer, err)
	}
	return nil
}

// jsonString is a JSON string's value, or "" for anything else.
func jsonString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// jsonInt reads a whole number given as a JSON number or a numeric string
// (services have sent both); 0 for anything else.
func jsonInt(raw json.RawMessage) int {
	var f float64
	if json.Unmarshal(raw, &f) == nil {
		if f != math.Trunc(f) || f < 0 || f > math.MaxInt32 {
			return 0
		}
		return int(f)
	}
	if n, err := strconv.Atoi(jsonString(raw)); err == nil && n >= 0 && n <= math.MaxInt32 {
		return n
	}
	return 0
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}
