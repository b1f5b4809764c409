package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/mqtt"
)

// Defaults for Options fields left zero.
const (
	DefaultPort            = 8883
	DefaultAPIVersion      = "2025-08-01-preview" // the first with the credential API (reference §2.1)
	DefaultKeepAlive       = 240 * time.Second    // the C SDK's; the hub allows up to 1177 s
	DefaultTokenLifetime   = time.Hour            // azure-iot-sdk-c's DEFAULT_SAS_TOKEN_EXPIRY_TIME_SECS
	DefaultConnectTimeout  = 30 * time.Second
	DefaultResponseTimeout = 90 * time.Second // the hub CSR samples wait 90 s for the 202
	DefaultUserAgent       = "dpsagent-hub/go"
)

// maxKeepAlive is the largest keep-alive the hub honours: it times a client
// out after 1.5 × keep-alive, capped at 1767 s (reference §2.1).
const maxKeepAlive = 1177 * time.Second

// Options configure a Client. Zero fields take the documented defaults; only
// Host, DeviceID and one kind of Auth are required.
type Options struct {
	// Host is the hub's host name, registrationState.assignedHub. It is what
	// the user name, the SAS resource and the TLS server name carry, even
	// when Address dials elsewhere.
	Host string
	// Port is the MQTT over TLS port; 0 means 8883.
	Port int
	// Address, when set, is the HOST:PORT dialled instead of Host:Port: for
	// the emulator and tests, where the hub's name does not resolve.
	Address string
	// DeviceID is registrationState.deviceId; it is also the MQTT client ID.
	DeviceID string
	// ModelID is an optional IoT Plug and Play model ID (dtmi:...), sent in
	// the user name.
	ModelID string
	// UserAgent is sent as DeviceClientType in the user name; "" means
	// DefaultUserAgent.
	UserAgent string

	// Auth is how the device proves its identity.
	Auth Auth

	// RootCAs, when set, is the complete set of CAs trusted for the hub's
	// server certificate. Otherwise the built-in Azure roots are trusted,
	// plus the PEM certificates in TrustBundleFile, if set (the emulator's
	// CA, a TLS-inspecting proxy).
	RootCAs         *x509.CertPool
	TrustBundleFile string

	// APIVersion is the api-version of the user name; "" means
	// DefaultAPIVersion.
	APIVersion string
	// KeepAlive is the MQTT keep-alive; 0 means DefaultKeepAlive.
	KeepAlive time.Duration
	// CleanSession asks the hub to forget subscriptions and queued
	// cloud-to-device messages between connections. The SDKs default to a
	// persistent session (false), as this does.
	CleanSession bool
	// ConnectTimeout bounds one connection attempt (TCP, TLS and CONNACK);
	// 0 means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// ResponseTimeout bounds the wait for the hub's first answer to a twin
	// request or an issueCertificate request (its 202); 0 means
	// DefaultResponseTimeout. The certificate itself may take until the
	// operation expires.
	ResponseTimeout time.Duration

	// Logger receives the session's decisions; nil means no logging.
	Logger *zap.Logger
	// Now is the wall clock for SAS expiry and operation deadlines; nil
	// means time.Now.
	Now func() time.Time
	// Random returns a uniformly distributed number in [0, 1) for backoff
	// jitter; nil means math/rand/v2. Tests pass a fixed source.
	Random func() float64

	// OnMethod answers a direct method: the status goes back to the caller
	// with response, which must be JSON or empty. It runs on its own
	// goroutine; ctx ends when the Client is closed. nil answers every
	// method with 501.
	OnMethod func(ctx context.Context, name string, payload []byte) (status int, response []byte)
	// OnDesired receives desired-property updates with the version they
	// bring the desired section to. After every (re)connect the twin is read
	// again and, if its desired version changed, the complete desired section
	// is passed as the patch, since updates made while disconnected are not
	// pushed. Calls are serialised, in order, with OnConnectionChange and
	// OnMessage.
	OnDesired func(patch map[string]any, version int)
	// OnConnectionChange is told of every connection, every loss, and every
	// failed attempt (connected false with the attempt's error). An err
	// matching ErrUnauthorized means the hub refused the identity and the
	// Client stopped reconnecting.
	OnConnectionChange func(connected bool, err error)
	// OnMessage receives cloud-to-device messages with their properties
	// (system properties keep their "$." names). nil drops them after
	// acknowledging.
	OnMessage func(body []byte, properties map[string]string)
}

// Auth is the device's credential: exactly one of Certificate and
// SymmetricKey.
type Auth struct {
	// Certificate returns the current X.509 identity (the full issued chain
	// and its key). It is called at every connection attempt, so a renewed
	// certificate takes effect at the next (re)connect.
	Certificate func() (*tls.Certificate, error)
	// SymmetricKey is the decoded device key for SAS authentication.
	SymmetricKey []byte
	// TokenLifetime is how long each SAS token is valid; 0 means
	// DefaultTokenLifetime. The session reconnects with a fresh token at 80%
	// of it, as the C SDK does, before the hub disconnects it (401003).
	TokenLifetime time.Duration
}

// validate checks o and returns a copy with defaults filled in.
func (o Options) validate() (Options, error) {
	if o.Host == "" {
		return o, errors.New("hub options: Host is empty; set it to the assignedHub DPS returned")
	}
	if strings.ContainsAny(o.Host, "/:? ") {
		return o, fmt.Errorf("hub options: Host %q must be a bare host name such as myhub.azure-devices.net (put a port in Port, a dial address in Address)", o.Host)
	}
	if err := checkDeviceID(o.DeviceID); err != nil {
		return o, fmt.Errorf("hub options: %w", err)
	}
	switch a := o.Auth; {
	case a.Certificate == nil && len(a.SymmetricKey) == 0:
		return o, errors.New("hub options: no Auth: set Auth.Certificate for X.509 or Auth.SymmetricKey for SAS")
	case a.Certificate != nil && len(a.SymmetricKey) > 0:
		return o, errors.New("hub options: Auth has both a certificate and a symmetric key; set one")
	case a.TokenLifetime < 0:
		return o, fmt.Errorf("hub options: Auth.TokenLifetime %s is negative", a.TokenLifetime)
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	if o.Port < 1 || o.Port > 65535 {
		return o, fmt.Errorf("hub options: Port %d is not a TCP port", o.Port)
	}
	if o.Address == "" {
		o.Address = net.JoinHostPort(o.Host, strconv.Itoa(o.Port))
	}
	if _, _, err := net.SplitHostPort(o.Address); err != nil {
		return o, fmt.Errorf("hub options: Address %q: %w (use HOST:PORT)", o.Address, err)
	}
	if o.APIVersion == "" {
		o.APIVersion = DefaultAPIVersion
	}
	if o.UserAgent == "" {
		o.UserAgent = DefaultUserAgent
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	if o.KeepAlive < time.Second || o.KeepAlive > maxKeepAlive {
		return o, fmt.Errorf("hub options: KeepAlive %s: use 1 s to %d s (the hub's limit)", o.KeepAlive, int(maxKeepAlive.Seconds()))
	}
	if o.Auth.TokenLifetime == 0 {
		o.Auth.TokenLifetime = DefaultTokenLifetime
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.ResponseTimeout <= 0 {
		o.ResponseTimeout = DefaultResponseTimeout
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Random == nil {
		o.Random = rand.Float64
	}
	return o, nil
}

// maxDeviceIDLen is IoT Hub's limit on device IDs (reference §3).
const maxDeviceIDLen = 128

// checkDeviceID refuses IDs that would break the topics they are written
// into: MQTT wildcards, level separators and control characters.
func checkDeviceID(id string) error {
	switch {
	case id == "":
		return errors.New("DeviceID is empty; set it to the deviceId DPS returned")
	case len(id) > maxDeviceIDLen:
		return fmt.Errorf("DeviceID is %d bytes long; IoT Hub allows %d", len(id), maxDeviceIDLen)
	case strings.ContainsAny(id, "/+#"):
		return fmt.Errorf("DeviceID %q contains '/', '+' or '#', which IoT Hub device IDs cannot", id)
	case strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f || r > 0x7e }):
		return fmt.Errorf("DeviceID %q contains characters IoT Hub device IDs cannot (use ASCII letters, digits and -.%%_*?!(),:=@$')", id)
	}
	return nil
}

// username is the MQTT user name (reference §2.1):
// {host}/{deviceId}/?api-version={ver}&DeviceClientType={ua}[&model-id={dtmi}].
func (o *Options) username() string {
	u := mqtt.HubUsername(o.Host, o.DeviceID, o.APIVersion, o.UserAgent)
	if o.ModelID != "" {
		u += "&model-id=" + mqtt.Escape(o.ModelID)
	}
	return u
}
