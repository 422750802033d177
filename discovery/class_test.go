package discovery

import (
	"slices"
	"testing"

	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestClassClaims checks which Ingresses are ours by their class, for the
// configured class "edgegate".
func TestClassClaims(t *testing.T) {
	t.Parallel()
	class := func(name, controller string, isDefault bool) *netv1.IngressClass {
		ic := &netv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: netv1.IngressClassSpec{Controller: controller}}
		if isDefault {
			ic.Annotations = map[string]string{netv1.AnnotationIsDefaultIngressClass: "true"}
		}
		return ic
	}
	var (
		ours        = class("edgegate", ControllerName, false)
		oursDefault = class("edgegate", ControllerName, true)
		theirs      = class("edgegate", "example.com/other", false)
		otherFleet  = class("edge-internal", ControllerName, true)
	)
	byName := func(n string) *netv1.Ingress {
		return &netv1.Ingress{Spec: netv1.IngressSpec{IngressClassName: &n}}
	}
	byAnnotation := func(n string) *netv1.Ingress {
		return &netv1.Ingress{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{annIngressClass: n}}}
	}
	both := func(name, ann string) *netv1.Ingress {
		ing := byAnnotation(ann)
		ing.Spec.IngressClassName = &name
		return ing
	}
	classless := &netv1.Ingress{}

	for _, tc := range []struct {
		name    string
		classes []*netv1.IngressClass
		ing     *netv1.Ingress
		claims  bool
		missing bool // a Problem: the named IngressClass does not exist
	}{
		{"name, class ours", []*netv1.IngressClass{ours}, byName("edgegate"), true, false},
		{"name, class missing", nil, byName("edgegate"), false, true},
		{"name, class missing, other classes exist", []*netv1.IngressClass{otherFleet}, byName("edgegate"), false, true},
		{"name, class of another controller", []*netv1.IngressClass{theirs}, byName("edgegate"), false, false},
		{"name of another fleet's class", []*netv1.IngressClass{ours, otherFleet}, byName("edge-internal"), false, false},
		{"unknown name", []*netv1.IngressClass{ours}, byName("nginx"), false, false},
		{"unknown name, class missing", nil, byName("nginx"), false, false},
		{"annotation, class ours", []*netv1.IngressClass{ours}, byAnnotation("edgegate"), true, false},
		{"annotation, class missing", nil, byAnnotation("edgegate"), true, false},
		{"annotation, class of another controller", []*netv1.IngressClass{theirs}, byAnnotation("edgegate"), false, false},
		{"annotation of another class", []*netv1.IngressClass{ours}, byAnnotation("nginx"), false, false},
		{"name wins over annotation", []*netv1.IngressClass{ours}, both("nginx", "edgegate"), false, false},
		{"name wins over annotation, class missing", nil, both("edgegate", "edgegate"), false, true},
		{"empty name reads the annotation", nil, both("", "edgegate"), true, false},
		{"class-less, class ours and default", []*netv1.IngressClass{oursDefault}, classless, true, false},
		{"class-less, class ours, not default", []*netv1.IngressClass{ours}, classless, false, false},
		{"class-less, class missing", nil, classless, false, false},
		{"class-less, another fleet's default", []*netv1.IngressClass{ours, otherFleet}, classless, false, false},
		{"empty annotation is class-less", []*netv1.IngressClass{oursDefault}, byAnnotation(""), true, false},
		{"empty name is class-less", []*netv1.IngressClass{oursDefault}, byName(""), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := &builder{}
			cs := b.classes("edgegate", tc.classes)
			if got := cs.claims(tc.ing); got != tc.claims {
				t.Errorf("claims = %v, want %v", got, tc.claims)
			}
			if got := cs.missing(tc.ing); got != tc.missing {
				t.Errorf("missing = %v, want %v", got, tc.missing)
			}
			// Build agrees: the Ingress is routed when claimed, and has the
			// missing-class Problem exactly when missing.
			ing := tc.ing.DeepCopy()
			ing.Namespace, ing.Name = "default", "web"
			ing.Spec.DefaultBackend = &netv1.IngressBackend{Service: &netv1.IngressServiceBackend{Name: "web", Port: netv1.ServiceBackendPort{Number: 80}}}
			snap, problems := Build(Input{Ingresses: []*netv1.Ingress{ing}, Classes: tc.classes})
			if routed := snap.Default != nil; routed != tc.claims {
				t.Errorf("Build routes it: %v, want %v", routed, tc.claims)
			}
			want := cs.missingProblem(ing)
			if got := slices.Contains(problems, want); got != tc.missing {
				t.Errorf("Build problems %v: missing-class problem %v, want %v", problems, got, tc.missing)
			}
		})
	}
}
