package hub

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// maxCSRBytes is the credential API's limit on a CSR (reference §2.3); the
// hub refuses a larger one with 400004.
const maxCSRBytes = 8 << 10

// maxIssueSubmissions bounds how often one IssueCertificate call submits its
// request (resubmissions after lost answers, a 409 or a 412), so a hub that
// keeps losing answers cannot keep it going forever.
const maxIssueSubmissions = 6

// Waits for the 200 when the hub's 202 gives no usable operationExpires
// (absent, or already past by the device's clock), and at most: the SDK
// samples wait up to an hour; the service says operations can last 12 hours.
const (
	defaultOperationWait = time.Hour
	maxOperationWait     = 24 * time.Hour
)

// ErrOperationExpired: the hub accepted the request but sent no certificate
// before the operation expired. Submit a new request.
var ErrOperationExpired = errors.New("the certificate operation expired without an answer")

// issueBody is the request body; unknown fields are refused by the hub, so
// it has exactly these.
type issueBody struct {
	ID      string `json:"id"`
	CSR     string `json:"csr"`
	Replace string `json:"replace,omitempty"`
}

// issueState is one IssueCertificate call across its submissions.
type issueState struct {
	rid string
	// replace is sent when resubmitting: the request ID whose operation the
	// hub may still run (an answer was lost), or "*" after a 409.
	replace         string
	conflictRetried bool
	submissions     int
}

// issueOutcome is how one submission ended.
type issueOutcome int

const (
	issueDone     issueOutcome = iota // a chain or a final error
	issueResubmit                     // submit again (the state says how)
)

// IssueCertificate asks the hub's credential API for a certificate for the
// PKCS#10 request csrDER and returns the issued chain, DER, leaf first, as
// the hub sent it (the caller verifies it). The hub answers 202 at once and
// the certificate later; this waits until the operation expires or ctx
// ends. An answer lost with the connection is recovered by resubmitting with
// replace; a 409 (another operation active) is resubmitted once replacing
// it; a 412 (nothing to replace) becomes a fresh request. Hub errors are
// *Error (see Retryable and Hint). The current connection is not touched:
// call Reconnect once the new certificate is in place.
func (c *Client) IssueCertificate(ctx context.Context, csrDER []byte) (chain [][]byte, err error) {
	if err := checkCSR(csrDER); err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	st := &issueState{rid: newRID()}
	for {
		if st.submissions >= maxIssueSubmissions {
			return nil, fmt.Errorf("issue certificate through IoT Hub %s: %w after %d submissions (answers kept getting lost); try again later", c.opts.Host, ErrNoAnswer, st.submissions)
		}
		cn, err := c.waitConnected(ctx)
		if err != nil {
			return nil, fmt.Errorf("issue certificate: %w", err)
		}
		chain, outcome, err := c.issueOn(ctx, cn, st, csrDER)
		if outcome == issueResubmit {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("issue certificate through IoT Hub %s: %w", c.opts.Host, err)
		}
		return chain, nil
	}
}

// checkCSR catches a bad CSR before the hub does, with a clearer message.
func checkCSR(der []byte) error {
	if len(der) == 0 {
		return errors.New("the CSR is empty")
	}
	if len(der) > maxCSRBytes {
		return fmt.Errorf("the CSR is %d bytes; the hub takes at most %d", len(der), maxCSRBytes)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return fmt.Errorf("the CSR cannot be parsed (it must be DER, not PEM): %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("the CSR's signature does not verify: %w", err)
	}
	return nil
}

// issueOn submits the request once on cn and follows it to an outcome.
func (c *Client) issueOn(ctx context.Context, cn *connection, st *issueState, csrDER []byte) ([][]byte, issueOutcome, error) {
	if cn.refused[filterCredentials] {
		return nil, issueDone, fmt.Errorf("the hub refused the subscription to %s; it does not offer the credential API (it needs api-version %s and an X.509 connection)", filterCredentials, DefaultAPIVersion)
	}
	payload, err := json.Marshal(issueBody{ID: c.opts.DeviceID, CSR: base64.StdEncoding.EncodeToString(csrDER), Replace: st.replace})
	if err != nil {
		return nil, issueDone, fmt.Errorf("encode the request: %w", err)
	}
	st.submissions++
	log := c.log.With(zap.String("rid", st.rid), zap.String("replace", st.replace), zap.Int("submission", st.submissions))
	answers, unregister := c.register(st.rid)
	defer unregister()
	tok := cn.client.Publish(issueCertificateTopic(st.rid), 1, false, payload)
	published := tok.Done()
	log.Info("certificate requested from the hub")

	// Until the 202, the hub is expected to answer within ResponseTimeout;
	// after it, until the operation expires.
	deadline := time.NewTimer(c.opts.ResponseTimeout)
	defer deadline.Stop()
	acceptedYet := false
	// lost is the answer to a lost submission: the hub may still run it, so
	// the next submission replaces it by its request ID.
	lost := func(why string) ([][]byte, issueOutcome, error) {
		log.Warn("the hub's answer was lost; resubmitting, replacing this request", zap.String("why", why))
		st.replace = st.rid
		return nil, issueResubmit, nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil, issueDone, ctx.Err()
		case <-published:
			published = nil
			if err := tok.Error(); err != nil {
				if err := c.publishFailed(ctx, cn, err); !errors.Is(err, errConnectionLost) {
					return nil, issueDone, err
				}
				return lost("the connection ended while publishing")
			}
		case <-cn.lost:
			return lost("the connection ended")
		case <-deadline.C:
			if acceptedYet {
				return nil, issueDone, ErrOperationExpired
			}
			return lost(fmt.Sprintf("no answer within %s", c.opts.ResponseTimeout))
		case in := <-answers:
			switch {
			case in.status == 202:
				acceptedYet = true
				a, err := parseAccepted(in.body)
				if err != nil {
					log.Warn("the hub's 202 is malformed; waiting for the certificate anyway", zap.Error(err))
				}
				wait := c.operationWait(a.expires)
				deadline.Reset(wait)
				log.Info("the hub accepted the certificate request", zap.String("correlation_id", clip(a.correlationID)),
					zap.Time("operation_expires", a.expires), zap.Duration("waiting_up_to", wait))
			case in.status == 200:
				chain, err := parseIssued(in.body)
				if err != nil {
					return nil, issueDone, err
				}
				log.Info("the hub issued a certificate", zap.Int("chain_length", len(chain)))
				return chain, issueDone, nil
			case in.status == 409 && !st.conflictRetried:
				log.Warn("another certificate operation is active; resubmitting to replace it", zap.Error(parseErrorBody("issueCertificate", in.status, in.body)))
				st.conflictRetried, st.replace = true, "*"
				return nil, issueResubmit, nil
			case in.status == 412 && st.replace != "":
				log.Info("nothing left to replace; submitting a fresh request")
				st.rid, st.replace = newRID(), ""
				return nil, issueResubmit, nil
			case in.status >= 400:
				return nil, issueDone, parseErrorBody("issueCertificate", in.status, in.body)
			default:
				return nil, issueDone, fmt.Errorf("%w: unexpected status %d", ErrBadAnswer, in.status)
			}
		}
	}
}

// operationWait is how long to wait for the certificate after a 202 that
// said the operation expires at expires.
func (c *Client) operationWait(expires time.Time) time.Duration {
	if expires.IsZero() {
		return defaultOperationWait
	}
	d := expires.Sub(c.opts.Now())
	if d <= 0 {
		// Already past by this device's clock: the clock is off, not the
		// hub. Wait the usual time rather than give up at once.
		return defaultOperationWait
	}
	return min(d, maxOperationWait)
}
