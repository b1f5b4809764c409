package dps

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dpsagent/dpsagent/mqtt"
)

// Topics of the DPS MQTT protocol (reference §1.3).
const (
	responseFilter = "$dps/registrations/res/#"
	responsePrefix = "$dps/registrations/res/"
	registerTopic  = "$dps/registrations/PUT/iotdps-register/?$rid="
	pollTopic      = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="
)

// Limits on what DPS may send. DPS caps messages at 96 KB; anything larger
// is not DPS talking, and is refused before it is decoded.
const (
	maxBody           = 96 << 10
	maxChainLength    = 8
	maxOperationIDLen = 512
	maxMessageLen     = 512
)

// Registration statuses (RegistrationOperationStatus.status).
const (
	statusUnassigned = "unassigned"
	statusAssigning  = "assigning"
	statusAssigned   = "assigned"
)

// errMalformed is wrapped by every parse error of a DPS answer.
var errMalformed = errors.New("malformed DPS response")

// responseTopic is what a response topic says.
type responseTopic struct {
	status int
	rid    string
	// retryAfter is valid when hasRetryAfter; a malformed value is treated
	// as absent (badRetryAfter holds it for the log): a bad hint from the
	// server should not fail a registration that can go on with a default.
	retryAfter    time.Duration
	hasRetryAfter bool
	badRetryAfter string
}

// parseResponseTopic reads "$dps/registrations/res/{status}/?$rid=…[&retry-after=…]",
// taking the parameters by name in any order.
func parseResponseTopic(topic string) (responseTopic, error) {
	t, err := mqtt.ParseTopic(topic)
	if err != nil {
		return responseTopic{}, fmt.Errorf("%w: %w", errMalformed, err)
	}
	status, err := t.Status(responsePrefix)
	if err != nil {
		return responseTopic{}, fmt.Errorf("%w: %w", errMalformed, err)
	}
	rid, ok := t.RequestID()
	if !ok || rid == "" {
		return responseTopic{}, fmt.Errorf("%w: topic %q has no $rid", errMalformed, clip(topic, 128))
	}
	rt := responseTopic{status: status, rid: rid}
	d, ok, err := t.RetryAfter()
	switch {
	case err != nil:
		rt.badRetryAfter = clip(t.Query.Get(mqtt.ParamRetryAfter), 32)
	case ok:
		rt.retryAfter, rt.hasRetryAfter = d, true
	}
	return rt, nil
}

// operationStatus is RegistrationOperationStatus (reference §1.5). Fields
// this client does not use are ignored; a known field of the wrong JSON type
// is an error.
type operationStatus struct {
	OperationID       string             `json:"operationId"`
	Status            string             `json:"status"`
	RegistrationState *registrationState `json:"registrationState"`
}

type registrationState struct {
	RegistrationID         string          `json:"registrationId"`
	CreatedDateTimeUTC     string          `json:"createdDateTimeUtc"`
	AssignedHub            string          `json:"assignedHub"`
	DeviceID               string          `json:"deviceId"`
	Status                 string          `json:"status"`
	Substatus              string          `json:"substatus"`
	ErrorCode              int             `json:"errorCode"`
	ErrorMessage           string          `json:"errorMessage"`
	LastUpdatedDateTimeUTC string          `json:"lastUpdatedDateTimeUtc"`
	ETag                   string          `json:"etag"`
	Payload                json.RawMessage `json:"payload"`
	IssuedCertificateChain []string        `json:"issuedCertificateChain"`
}

// parseOperationStatus decodes the body of a 200 or 202.
func parseOperationStatus(body []byte) (operationStatus, error) {
	var s operationStatus
	if err := decodeBody(body, &s); err != nil {
		return operationStatus{}, err
	}
	if len(s.OperationID) > maxOperationIDLen {
		return operationStatus{}, fmt.Errorf("%w: operationId is %d bytes long", errMalformed, len(s.OperationID))
	}
	if st := s.RegistrationState; st != nil && len(st.IssuedCertificateChain) > maxChainLength {
		return operationStatus{}, fmt.Errorf("%w: issuedCertificateChain has %d certificates, more than %d", errMalformed, len(st.IssuedCertificateChain), maxChainLength)
	}
	return s, nil
}

// errorBody is ProvisioningServiceErrorDetails, the body of a status ≥ 300.
type errorBody struct {
	ErrorCode  int    `json:"errorCode"`
	TrackingID string `json:"trackingId"`
	Message    string `json:"message"`
}

// parseErrorBody decodes an error body. The status in the topic is what
// matters, so an empty or unreadable body is reported but does not hide it.
func parseErrorBody(body []byte) (errorBody, error) {
	var e errorBody
	if len(bytes.TrimSpace(body)) == 0 {
		return e, nil
	}
	if err := decodeBody(body, &e); err != nil {
		return errorBody{}, err
	}
	return e, nil
}

func decodeBody(body []byte, v any) error {
	if len(body) > maxBody {
		return fmt.Errorf("%w: the body is %d bytes, more than DPS's %d-byte limit", errMalformed, len(body), maxBody)
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return fmt.Errorf("%w: the body is not a JSON object", errMalformed)
	}
	if err := json.Unmarshal(trimmed, v); err != nil {
		return fmt.Errorf("%w: %w", errMalformed, err)
	}
	return nil
}

// Result is a successful registration: where DPS assigned the device, and
// the certificate chain issued for the CSR, if one was sent.
type Result struct {
	OperationID string
	// Status is "assigned".
	Status string
	// Substatus is initialAssignment, deviceDataMigrated, deviceDataReset or
	// reprovisionedToInitialAssignment.
	Substatus   string
	AssignedHub string
	DeviceID    string
	// CreatedAt and LastUpdatedAt are zero when DPS gave none or gave a
	// form that is not a timestamp.
	CreatedAt     time.Time
	LastUpdatedAt time.Time
	ETag          string
	// IssuedCertificateChain is the issued chain as DER, in the order DPS
	// sent it. The order is not trusted: find the leaf by its public key.
	// Empty when no CSR was sent or the enrollment issues no certificates.
	IssuedCertificateChain [][]byte
	// Payload is the registrationState.payload (custom allocation data),
	// nil when absent.
	Payload json.RawMessage
}

// result turns an assigned status into a Result, refusing one that lacks
// what a device needs to go on.
func (s operationStatus) result(registrationID string) (*Result, error) {
	st := s.RegistrationState
	if st == nil {
		return nil, fmt.Errorf("%w: status assigned without a registrationState", errMalformed)
	}
	if st.AssignedHub == "" || st.DeviceID == "" {
		return nil, fmt.Errorf("%w: status assigned without assignedHub and deviceId", errMalformed)
	}
	if st.RegistrationID != "" && !strings.EqualFold(st.RegistrationID, registrationID) {
		return nil, fmt.Errorf("%w: the answer is for registration %q, not %q", errMalformed, clip(st.RegistrationID, 140), registrationID)
	}
	chain := make([][]byte, 0, len(st.IssuedCertificateChain))
	for i, c := range st.IssuedCertificateChain {
		der, err := base64.StdEncoding.DecodeString(c)
		if err != nil || len(der) == 0 {
			return nil, fmt.Errorf("%w: issuedCertificateChain[%d] is not base64 DER", errMalformed, i)
		}
		chain = append(chain, der)
	}
	r := &Result{
		OperationID:   s.OperationID,
		Status:        s.Status,
		Substatus:     st.Substatus,
		AssignedHub:   st.AssignedHub,
		DeviceID:      st.DeviceID,
		CreatedAt:     parseTime(st.CreatedDateTimeUTC),
		LastUpdatedAt: parseTime(st.LastUpdatedDateTimeUTC),
		ETag:          st.ETag,
		Payload:       rawOrNil(st.Payload),
	}
	if len(chain) > 0 {
		r.IssuedCertificateChain = chain
	}
	return r, nil
}

// parseTime reads DPS's timestamps: RFC 3339 with up to 7 fractional digits,
// sometimes without a zone, which is UTC (the fields are named ...Utc).
func parseTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC()
	}
	if t, err := time.ParseInLocation("2006-01-02T15:04:05.999999999", s, time.UTC); err == nil {
		return t
	}
	return time.Time{}
}

func rawOrNil(m json.RawMessage) json.RawMessage {
	if len(m) == 0 || string(m) == "null" {
		return nil
	}
	return bytes.Clone(m)
}

// cleanText makes service text safe to log and show: one line, printable,
// bounded.
func cleanText(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	return clip(strings.TrimSpace(s), maxMessageLen)
}
