package emulator

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// IoT Hub error codes the hub front-end answers with. The six-digit code is
// the HTTP status times 1000 plus a reason; the numbers are the service's own
// (Microsoft.Azure.Devices ErrorCode, reference §2.3 "Error codes observed").
const (
	hubErrInvalidProtocolVersion = 400001 // the API version does not offer the operation
	hubErrArgumentInvalid        = 400004 // a field is missing, unknown or malformed
	hubErrFormat                 = 400006 // the body is not JSON
	hubErrCSRDecode              = 400040 // the CSR cannot be decoded or verified
	hubErrUnauthorized           = 401002 // the connection may not use the operation
	hubErrConflictDefault        = 409005 // another credential operation is active
	hubErrPreconditionFailed     = 412001 // no pending credential operation matches replace
	hubErrTwinThrottled          = 429001 // IoT Hub's ThrottlingException
	hubErrCredentialThrottled    = 429002 // as the credential API's SDK tests show it
)

// hubErrorBody is the JSON body of an error answer on a response topic
// (reference §2.3 "Errors"). The SDKs read errorCode and derive the HTTP
// status from it; the topic carries that status too.
type hubErrorBody struct {
	ErrorCode    int            `json:"errorCode"`
	Message      string         `json:"message"`
	TrackingID   string         `json:"trackingId"`
	TimestampUTC string         `json:"timestampUtc"`
	RetryAfter   *int           `json:"retryAfter,omitempty"`
	Info         map[string]any `json:"info,omitempty"`
}

// hubError is an answer the hub sends instead of the one asked for.
type hubError struct {
	code       int
	message    string
	retryAfter int // seconds; 0 leaves retryAfter out
	info       map[string]any
}

// status is the HTTP status the topic carries: errorCode / 1000.
func (e *hubError) status() int { return e.code / 1000 }

func (e *hubError) Error() string { return fmt.Sprintf("%d %s", e.code, e.message) }

// body renders the error as the hub sends it, stamped at now.
func (e *hubError) body(now time.Time) []byte {
	b := hubErrorBody{
		ErrorCode:    e.code,
		Message:      e.message,
		TrackingID:   hubTrackingID(),
		TimestampUTC: now.UTC().Format(time.RFC3339Nano),
		Info:         e.info,
	}
	if e.retryAfter > 0 {
		b.RetryAfter = &e.retryAfter
	}
	out, _ := json.Marshal(b) // only strings, ints and JSON-safe maps
	return out
}

func newHubError(code int, format string, args ...any) *hubError {
	return &hubError{code: code, message: fmt.Sprintf(format, args...)}
}

// hubFaultError is the error answer an injected error or throttle fault
// stands for. throttleCode is the endpoint's 429 code.
func hubFaultError(f Fault, throttleCode int) *hubError {
	status := f.Status
	if status == 0 {
		status = 500
	}
	code := status*1000 + 1 // 500001 server error, 503001 unavailable
	msg := fmt.Sprintf("injected fault %d: error %d", f.ID, status)
	if f.Action == ActionThrottle {
		code, msg = throttleCode, fmt.Sprintf("injected fault %d: throttled, retry after %d s", f.ID, f.RetryAfter)
	}
	return &hubError{code: code, message: msg, retryAfter: f.RetryAfter}
}

// hubGUID is a random (version 4) GUID in its usual text form, the shape of
// IoT Hub's correlation IDs.
func hubGUID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails since Go 1.24
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// hubTrackingID is unique per answer, as the service's tracking IDs are, so
// that a report quoting one can be found in the emulator's log.
func hubTrackingID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// hubMalformedJSON is what a malformed_json fault sends: the start of a
// plausible answer, cut off.
func hubMalformedJSON() []byte {
	return []byte(`{"correlationId":"` + hubGUID() + `","certificates":["MIIB`)
}

// Sizes of a hostile body: nesting far deeper than any JSON decoder should
// follow (Go's stops at 10000), and padding that makes the message larger
// than any answer the hub really sends.
const (
	hubHostileDepth   = 100_000
	hubHostilePadding = 512 << 10
)

// hubHostileJSON is what a hostile fault sends: valid JSON, but deeply nested
// and oversized, to check that a client bounds what it parses.
func hubHostileJSON() []byte {
	var b bytes.Buffer
	b.Grow(2*hubHostileDepth + hubHostilePadding + 64)
	b.WriteString(`{"padding":"`)
	b.Write(bytes.Repeat([]byte{'A'}, hubHostilePadding))
	b.WriteString(`","certificates":`)
	b.Write(bytes.Repeat([]byte{'['}, hubHostileDepth))
	b.Write(bytes.Repeat([]byte{']'}, hubHostileDepth))
	b.WriteString(`}`)
	return b.Bytes()
}
