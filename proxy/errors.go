package proxy

import (
	"errors"
	"net"
	"os"

	"github.com/valyala/fasthttp"
)

// All status mapping lives here.

var (
	textPlain          = []byte("text/plain; charset=utf-8")
	bodyNotReady       = []byte("edgegate: not ready\n")
	bodyNotFound       = []byte("404 page not found\n")
	bodyNoEndpoint     = []byte("edgegate: no ready endpoint\n")
	bodyBadGateway     = []byte("edgegate: bad gateway\n")
	bodyGatewayTimeout = []byte("edgegate: gateway timeout\n")
	bodyBusy           = []byte("edgegate: upstream busy\n")
	bodyBadRequest     = []byte("edgegate: bad request\n")
	bodyReqTimeout     = []byte("edgegate: request timeout\n")
	bodyHeaderTooLarge = []byte("edgegate: request header fields too large\n")
	bodyInternal       = []byte("edgegate: internal error\n")
	bodyRedirect       = []byte("edgegate: this site is served over https\n")

	bodyMethodNotAllowed = []byte("edgegate: method not allowed\n")
	methodConnect        = []byte("CONNECT")
	methodTrace          = []byte("TRACE")
	hdrAllow             = []byte("Allow")
	allowedMethods       = []byte("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
)

// classifyErr sorts a failed endpoint round trip.
func classifyErr(err error) errKind {
	var de *dialError
	switch {
	case errors.As(err, &de):
		if isTimeout(de.err) {
			// No answer to the SYN within the dial timeout: an upstream
			// timeout (504), like nginx's proxy_connect_timeout.
			return errTimeout
		}
		return errConnect
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return errBusy
	case isTimeout(err):
		return errTimeout
	default:
		return errReset
	}
}

// statusOf maps an error kind to the client's status and body: connect and
// reset 502, timeout (connect or response) 504, busy 503.
func statusOf(k errKind) (int, []byte) {
	switch k {
	case errTimeout:
		return fasthttp.StatusGatewayTimeout, bodyGatewayTimeout
	case errBusy:
		return fasthttp.StatusServiceUnavailable, bodyBusy
	default:
		return fasthttp.StatusBadGateway, bodyBadGateway
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isSmallBuffer(err error) bool {
	var sb *fasthttp.ErrSmallBuffer
	return errors.As(err, &sb)
}
