{{/* The router service's settings (templates/router/). */}}

{{/* Non-empty when the router has a file to read from its ConfigMap: the routing rules
     (router.rules) or the retention policies (router.retentionPolicies). */}}
{{- define "micropacs.routerFiles" -}}
{{- if and .Values.router.enabled (or .Values.router.rules .Values.router.retentionPolicies) -}}
true
{{- end -}}
{{- end -}}

{{/* Whether a pod of its own runs the retention policies on their schedule: only with
     policies, since two scheduled runs at once are safe but do the work twice
     (docs/lifecycle.md#runs). */}}
{{- define "micropacs.routerRetentionPod" -}}
{{- if and .Values.router.enabled .Values.router.retentionPolicies -}}
true
{{- end -}}
{{- end -}}

{{/* The router container's own environment: dict "root" $ "scheduled" bool (the retention
     pod, which alone runs the policies nightly and by free space). */}}
{{- define "micropacs.routerEnv" -}}
{{- $router := .root.Values.router -}}
{{- with $router.rules }}
- {name: MICROPACS_ROUTER__RULES_FILE, value: /etc/micropacs/router/rules.yaml}
{{- end }}
{{- with $router.retentionPolicies }}
- {name: MICROPACS_RETENTION__POLICIES_FILE, value: /etc/micropacs/router/retention.yaml}
{{- end }}
- {name: MICROPACS_RETENTION__SCHEDULED, value: {{ .scheduled | quote }}}
- {name: MICROPACS_RETENTION__NIGHTLY_AT, value: {{ $router.retention.nightlyAt | quote }}}
- {name: MICROPACS_RETENTION__GRACE_PERIOD, value: {{ $router.retention.gracePeriod | quote }}}
- {name: MICROPACS_IAN__DESTINATIONS, value: {{ $router.ianDestinations | toJson | quote }}}
{{- end -}}
