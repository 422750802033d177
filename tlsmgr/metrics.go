package tlsmgr

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	fallback        *prometheus.CounterVec
	orders          *prometheus.CounterVec
	handshakeErrors prometheus.Counter
	expiry          *expiryCollector
}

func newMetrics(m *Manager) *metrics {
	mt := &metrics{
		fallback: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegate_tls_fallback_total",
			Help: "Handshakes answered with the default certificate although a certificate was expected " +
				"(reason: invalid Secret, expired, acme_error).",
		}, []string{"reason"}),
		orders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegate_acme_orders_total",
			Help: "ACME certificate orders by outcome: success counts each newly issued certificate " +
				"(first issuance or renewal), failure each failed order of a host (at most one a minute).",
		}, []string{"result"}),
		handshakeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgegate_tls_handshake_errors_total",
			Help: "TLS handshakes of the HTTPS listener that failed.",
		}),
		expiry: &expiryCollector{m: m, desc: prometheus.NewDesc(
			"edgegate_tls_certificate_expiry_timestamp_seconds",
			"NotAfter of the certificate served for a host, as a Unix time (source: secret, acme, default).",
			[]string{"host", "source"}, nil)},
	}
	for _, r := range []string{ReasonInvalid, ReasonExpired, ReasonACMEError} {
		mt.fallback.WithLabelValues(r)
	}
	mt.orders.WithLabelValues("success")
	mt.orders.WithLabelValues("failure")
	return mt
}

// Collectors returns the Manager's metrics for registration.
func (m *Manager) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.metrics.fallback, m.metrics.orders, m.metrics.handshakeErrors, m.metrics.expiry}
}

// expiryCollector computes certificate expiry at scrape time from the
// current snapshot (Secrets), the ACME cache (ACME hosts with a certificate)
// and the default certificate (host "").
type expiryCollector struct {
	m    *Manager
	desc *prometheus.Desc
}

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	emit := func(host, source string, t time.Time) {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(t.Unix()), host, source)
	}
	if leaf := c.m.def.Leaf; leaf != nil {
		emit("", "default", leaf.NotAfter)
	}
	snap := c.m.snapshot()
	if snap == nil {
		return
	}
	for _, host := range snap.TLSHosts() {
		if cert := snap.Certificate(host); cert != nil && !cert.NotAfter.IsZero() {
			emit(host, "secret", cert.NotAfter)
		}
	}
	if c.m.cache == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, host := range snap.ACMEHosts() {
		data, err := c.m.cache.Get(ctx, host)
		if err != nil {
			continue
		}
		if leaf := leafFromCacheData(data); leaf != nil {
			emit(host, "acme", leaf.NotAfter)
		}
	}
}
