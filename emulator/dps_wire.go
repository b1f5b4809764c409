package emulator

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The DPS device protocol over MQTT, reference §1.3 to §1.5: topics, the user
// name, request and response bodies, error bodies. Everything here is a pure
// function of its input, so the fuzz targets can reach all of it.

// Topics of reference §1.3.
const (
	dpsResponseFilter  = "$dps/registrations/res/#"
	dpsTopicPrefix     = "$dps/registrations/"
	dpsRegisterPath    = "PUT/iotdps-register/"
	dpsPollPath        = "GET/iotdps-get-operationstatus/"
	dpsResponsePrefix  = "$dps/registrations/res/"
	dpsRequestIDParam  = "$rid"
	dpsOperationParam  = "operationId"
	dpsRetryAfterParam = "retry-after"
)

type dpsRequestKind int

const (
	dpsRegister dpsRequestKind = iota + 1
	dpsPoll
)

func (k dpsRequestKind) String() string {
	if k == dpsRegister {
		return "register"
	}
	return "poll"
}

// dpsRequest is a parsed request topic. RequestID is kept exactly as sent:
// it is opaque to the service and echoed byte for byte in the response
// topic, whatever escaping the client chose.
type dpsRequest struct {
	Kind        dpsRequestKind
	RequestID   string
	OperationID string // decoded; polls only, "" when absent
}

var (
	// errDPSTopic: the topic is not one DPS serves. The gateway closes such
	// a connection rather than guess what the client meant.
	errDPSTopic = errors.New("topic not served by DPS")
	// errDPSNoRequestID: a request without a usable $rid. There is nowhere
	// to send an answer, so none is sent (as the hub credential API does,
	// reference §2.3).
	errDPSNoRequestID = errors.New("request topic has no usable $rid")
)

// parseDPSRequestTopic reads a register or poll topic. The query is parsed
// as parameters in any order, never by position (reference §1.3 notes).
func parseDPSRequestTopic(topic string) (dpsRequest, error) {
	rest, ok := strings.CutPrefix(topic, dpsTopicPrefix)
	if !ok {
		return dpsRequest{}, fmt.Errorf("%w: %q", errDPSTopic, topic)
	}
	var req dpsRequest
	switch {
	case strings.HasPrefix(rest, dpsRegisterPath):
		req.Kind, rest = dpsRegister, rest[len(dpsRegisterPath):]
	case strings.HasPrefix(rest, dpsPollPath):
		req.Kind, rest = dpsPoll, rest[len(dpsPollPath):]
	default:
		return dpsRequest{}, fmt.Errorf("%w: %q (DPS serves %s and %s)", errDPSTopic, topic,
			dpsTopicPrefix+dpsRegisterPath, dpsTopicPrefix+dpsPollPath)
	}
	query, ok := strings.CutPrefix(rest, "?")
	if !ok && rest != "" {
		return dpsRequest{}, fmt.Errorf("%w: %q has %q where the query should start", errDPSTopic, topic, rest)
	}
	rid, ok := dpsQueryValue(query, dpsRequestIDParam)
	// The $rid goes back in a topic name, where MQTT forbids wildcards.
	if !ok || rid == "" || strings.ContainsAny(rid, "+#\x00") {
		return dpsRequest{}, fmt.Errorf("%w: %q", errDPSNoRequestID, topic)
	}
	req.RequestID = rid
	if req.Kind == dpsPoll {
		if raw, ok := dpsQueryValue(query, dpsOperationParam); ok {
			op, err := url.QueryUnescape(raw)
			if err != nil {
				op = raw // an unusable ID is refused as unknown, with a 404
			}
			req.OperationID = op
		}
	}
	return req, nil
}

// dpsQueryValue returns the raw (still escaped) value of the first
// parameter called name. It is lenient where url.ParseQuery is not (a ';'
// or a stray '%' elsewhere in the query does not spoil the whole of it):
// SDKs put user agents with arbitrary characters into these strings.
func dpsQueryValue(query, name string) (string, bool) {
	for field := range strings.SplitSeq(query, "&") {
		k, v, _ := strings.Cut(field, "=")
		if k == name {
			return v, true
		}
	}
	return "", false
}

// dpsResponseTopic is `$dps/registrations/res/{status}/?$rid={rid}` with
// `&retry-after={seconds}` when there is one (reference §1.3).
func dpsResponseTopic(status int, rid string, retryAfter int) string {
	var b strings.Builder
	b.Grow(len(dpsResponsePrefix) + len(rid) + 32)
	b.WriteString(dpsResponsePrefix)
	b.WriteString(strconv.Itoa(status))
	b.WriteString("/?$rid=")
	b.WriteString(rid)
	if retryAfter > 0 {
		b.WriteString("&retry-after=")
		b.WriteString(strconv.Itoa(retryAfter))
	}
	return b.String()
}

// dpsAPIVersion is a DPS api-version: a date, optionally "-preview".
type dpsAPIVersion struct {
	date    string // YYYY-MM-DD, which orders as text
	preview bool
}

func (v dpsAPIVersion) String() string {
	if v.preview {
		return v.date + "-preview"
	}
	return v.date
}

// atLeast orders versions by date; on the same date a preview comes before
// the release it previews.
func (v dpsAPIVersion) atLeast(o dpsAPIVersion) bool {
	if v.date != o.date {
		return v.date > o.date
	}
	return !v.preview || o.preview
}

// dpsCSRVersion is the first api-version with the csr request field and the
// issuedCertificateChain result (reference §1.1, [SPEC] @added).
var dpsCSRVersion = dpsAPIVersion{date: "2025-07-01", preview: true}

func (v dpsAPIVersion) supportsCSR() bool { return v.atLeast(dpsCSRVersion) }

var dpsAPIVersionPattern = regexp.MustCompile(`^([0-9]{4}-[0-9]{2}-[0-9]{2})(-preview)?$`)

func parseDPSAPIVersion(s string) (dpsAPIVersion, error) {
	m := dpsAPIVersionPattern.FindStringSubmatch(s)
	if m == nil {
		return dpsAPIVersion{}, fmt.Errorf("api-version %q is not a version such as 2019-03-31 or %s", s, dpsCSRVersion)
	}
	if _, err := time.Parse(time.DateOnly, m[1]); err != nil {
		return dpsAPIVersion{}, fmt.Errorf("api-version %q is not a date: %w", s, err)
	}
	return dpsAPIVersion{date: m[1], preview: m[2] != ""}, nil
}

// dpsUsername is the MQTT user name of reference §1.1:
// `{idScope}/registrations/{registrationId}/api-version={ver}[&ClientVersion=...]`.
type dpsUsername struct {
	IDScope        string
	RegistrationID string
	APIVersion     dpsAPIVersion
	ClientVersion  string // decoded when it can be; only ever logged
}

func parseDPSUsername(s string) (dpsUsername, error) {
	const form = "{id scope}/registrations/{registration ID}/api-version={version}"
	parts := strings.SplitN(s, "/", 4)
	if len(parts) != 4 || parts[1] != "registrations" {
		return dpsUsername{}, fmt.Errorf("user name %q is not %s", s, form)
	}
	u := dpsUsername{IDScope: parts[0], RegistrationID: parts[2]}
	// The documented form has no '?'; one is tolerated because the hub's
	// user name has it and people copy between the two.
	query := strings.TrimPrefix(parts[3], "?")
	raw, ok := dpsQueryValue(query, "api-version")
	if !ok {
		return dpsUsername{}, fmt.Errorf("user name %q has no api-version: use %s", s, form)
	}
	version, err := url.QueryUnescape(raw)
	if err != nil {
		return dpsUsername{}, fmt.Errorf("user name %q: api-version: %w", s, err)
	}
	if u.APIVersion, err = parseDPSAPIVersion(version); err != nil {
		return dpsUsername{}, fmt.Errorf("user name %q: %w", s, err)
	}
	if cv, ok := dpsQueryValue(query, "ClientVersion"); ok {
		if dec, err := url.QueryUnescape(cv); err == nil {
			cv = dec
		}
		u.ClientVersion = cv
	}
	return u, nil
}

// dpsRegisterBody is the DeviceRegistration of reference §1.4. Unknown
// fields (tpm, for one) are ignored, as the service's model binding does.
type dpsRegisterBody struct {
	RegistrationID *string         `json:"registrationId"`
	Payload        json.RawMessage `json:"payload"`
	CSR            *string         `json:"csr"`
}

// parseDPSRegisterBody accepts an empty body: the C# SDK sends none unless
// there is a custom payload, and older C SDKs never did (their register
// publish carries 0 bytes); the connection says who registers.
func parseDPSRegisterBody(b []byte) (dpsRegisterBody, *dpsError) {
	var body dpsRegisterBody
	if len(bytes.TrimSpace(b)) == 0 {
		return body, nil
	}
	if err := json.Unmarshal(b, &body); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return dpsRegisterBody{}, newDPSError(dpsCodeInvalidField, "The request body has an invalid field %q: %s where %s is expected.",
				typeErr.Field, typeErr.Value, typeErr.Type)
		}
		return dpsRegisterBody{}, newDPSError(dpsCodeMalformedJSON, "The request body is not valid JSON: %s.", err)
	}
	if bytes.Equal(bytes.TrimSpace(body.Payload), []byte("null")) {
		body.Payload = nil
	}
	return body, nil
}

// Error codes. DPS documents only the HTTP families (reference §1.5 [DOC-
// TROUBLE]); the six-digit codes come from what the service and SDK tests
// have shown where there is a source, and are the emulator's choice in the
// same family where there is none. Clients classify by errorCode/1000.
const (
	// A csr sent to an enrollment that does not issue certificates: the
	// iot-identity-service mock's answer (reference §1.4).
	dpsCodeCSRNotConfigured = 400000
	// Invalid or missing field; the hub credential API uses it for bad
	// base64, CSRs over 8 KB, id mismatches (reference §2.3).
	dpsCodeInvalidField = 400004
	// Malformed JSON, as the hub credential API answers it.
	dpsCodeMalformedJSON = 400006
	// A CSR that cannot be decoded or whose signature fails
	// (FailedToDecodeCsr, reference §2.3).
	dpsCodeCSRInvalid = 400040
	// A disabled enrollment: the emulator's choice, an authorization failure.
	dpsCodeDisabled = 401001
	// Enrollment not found (404201 is what DPS answers for a missing
	// enrollment on its service API).
	dpsCodeEnrollmentNotFound = 404201
	// Operation not found: the emulator's choice.
	dpsCodeOperationNotFound = 404202
	// Throttled (reference §1.5 lists 429 as throttling).
	dpsCodeThrottled = 429001
	// Internal error.
	dpsCodeInternal = 500000
)

// dpsError is an error answer: the topic status is errorCode/1000
// (reference §1.5, "Error responses").
type dpsError struct {
	code       int
	message    string
	retryAfter int // seconds; only throttling and transient errors carry one
}

func newDPSError(code int, format string, args ...any) *dpsError {
	return &dpsError{code: code, message: fmt.Sprintf(format, args...)}
}

func (e *dpsError) Error() string { return fmt.Sprintf("%d %s", e.code, e.message) }

func (e *dpsError) status() int { return e.code / 1000 }

// dpsErrorBody is ProvisioningServiceErrorDetails ([SPEC] models.tsp), in the
// field order the C SDK's example shows.
type dpsErrorBody struct {
	ErrorCode    int    `json:"errorCode"`
	TrackingID   string `json:"trackingId"`
	Message      string `json:"message"`
	TimestampUTC string `json:"timestampUtc"`
}

func (e *dpsError) body(now time.Time) []byte {
	return dpsJSON(dpsErrorBody{ErrorCode: e.code, TrackingID: dpsUUID(), Message: e.message, TimestampUTC: dpsTime(now)})
}

// dpsOperationStatus is RegistrationOperationStatus (reference §1.5).
type dpsOperationStatus struct {
	OperationID       string                 `json:"operationId"`
	Status            string                 `json:"status"`
	RegistrationState *dpsRegistrationResult `json:"registrationState,omitempty"`
}

// dpsRegistrationResult is DeviceRegistrationResult, fields in the order of
// the specification and of the service's answers the C SDK tests quote.
type dpsRegistrationResult struct {
	X509                   *dpsX509Result         `json:"x509,omitempty"`
	SymmetricKey           *dpsSymmetricKeyResult `json:"symmetricKey,omitempty"`
	RegistrationID         string                 `json:"registrationId"`
	CreatedDateTimeUTC     string                 `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string                 `json:"assignedHub,omitempty"`
	DeviceID               string                 `json:"deviceId,omitempty"`
	Status                 string                 `json:"status"`
	Substatus              string                 `json:"substatus,omitempty"`
	ErrorCode              int                    `json:"errorCode,omitempty"`
	ErrorMessage           string                 `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUTC string                 `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag                   string                 `json:"etag,omitempty"`
	Payload                json.RawMessage        `json:"payload,omitempty"`
	IssuedCertificateChain []string               `json:"issuedCertificateChain,omitempty"`
}

// dpsX509Result is "x509": {} for an individual enrollment, as the service's
// answer in the C SDK tests shows, and names the group for a group.
type dpsX509Result struct {
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
}

type dpsSymmetricKeyResult struct {
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
}

// Registration statuses (reference §1.5) and substatuses ([SPEC]).
const (
	dpsStatusAssigning = "assigning"
	dpsStatusAssigned  = "assigned"
	dpsStatusFailed    = "failed"
	dpsStatusDisabled  = "disabled"

	dpsSubstatusInitial   = "initialAssignment"
	dpsSubstatusMigrated  = "deviceDataMigrated"
	dpsSubstatusReset     = "deviceDataReset"
	dpsSubstatusReturned  = "reprovisionedToInitialAssignment"
	dpsDefaultRetryAfter  = 3 // seconds, as in the service's 202s
	dpsPollLimit          = 5 // polls per device per dpsPollWindow ([DOC-DPS-LIMITS])
	dpsPollWindow         = 10 * time.Second
	dpsTimeLayout         = "2006-01-02T15:04:05.0000000Z"
	dpsOperationIDVersion = "4"
)

// dpsJSON marshals like the service's .NET serializer: no HTML escaping of
// <, > and &, which Go's encoder does by default.
func dpsJSON(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Unreachable: the only raw JSON in an answer is a payload that
		// json.Unmarshal has already accepted. Should it happen, the device
		// gets an internal error instead of the emulator going down.
		return []byte(`{"errorCode":500000,"message":"the emulator could not encode its answer"}`)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// dpsTime renders a timestamp with seven fractional digits, as the service
// does ("2020-04-10T03:11:13.0276997Z").
func dpsTime(t time.Time) string { return t.UTC().Format(dpsTimeLayout) }

// dpsUUID is a random (version 4) UUID, for tracking IDs.
func dpsUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// dpsOperationID looks like the service's: "4.d0a671905ea5b2c8.42d78160-...".
func dpsOperationID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return dpsOperationIDVersion + "." + hex.EncodeToString(b[:]) + "." + dpsUUID()
}

// dpsETag looks like the service's: base64 of a quoted version string.
func dpsETag() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return base64.StdEncoding.EncodeToString([]byte(`"` + h[0:8] + "-0000-0100-0000-" + h[8:20] + `"`))
}
