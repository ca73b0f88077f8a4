{{/* The admin service's settings and checks (templates/admin/). */}}

{{/* The Secret name of the key signing browser sessions, or empty. A release that runs
     more than one admin pod, or publishes the web UI on an Ingress (whose thumbnails qr
     serves, and must check the session of), is refused without it. */}}
{{- define "micropacs.adminSessionKey" -}}
{{- $admin := .Values.admin -}}
{{- if $admin.enabled -}}
{{- $several := or (gt (int $admin.replicas) 1) $admin.autoscaling.enabled -}}
{{- if and (or $several $admin.ingress.enabled) (empty $admin.sessionKey.existingSecret) -}}
{{- fail "admin.sessionKey.existingSecret: name a Secret holding the key that signs browser sessions (kubectl create secret generic site-a-admin-session --from-literal=sessionKey=$(openssl rand -base64 48)); every admin pod and qr, which serves the web UI's thumbnails, must share it" -}}
{{- end -}}
{{- $admin.sessionKey.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The scheme and address of one service's HTTP port inside the cluster. */}}
{{- define "micropacs.serviceUrl" -}}
{{- $scheme := ternary "https" "http" (not (empty .root.Values.tls.http.secretName)) -}}
{{- printf "%s://%s-%s.%s.svc:%v" $scheme (include "micropacs.fullname" .root) .service .root.Release.Namespace .port -}}
{{- end -}}

{{/* The admin container's own environment: its settings, the Secrets it reads. */}}
{{- define "micropacs.adminEnv" -}}
{{- $admin := .Values.admin -}}
{{- $urls := dict
      "ingest" (include "micropacs.serviceUrl" (dict "root" . "service" "ingest-http" "port" 8080))
      "index" (include "micropacs.serviceUrl" (dict "root" . "service" "index-http" "port" 8080))
      "qr" (include "micropacs.serviceUrl" (dict "root" . "service" "qr" "port" .Values.qr.service.httpPort))
      "worklist" (include "micropacs.serviceUrl" (dict "root" . "service" "worklist-http" "port" 8080)) -}}
{{- if .Values.router.enabled }}
{{- $_ := set $urls "router" (include "micropacs.serviceUrl" (dict "root" . "service" "router-http" "port" 8080)) }}
{{- end }}
{{- /* The status page asks each service for its /healthz and /readyz. */ -}}
- name: MICROPACS_ADMIN__SERVICE_URLS
  value: {{ $urls | toJson | quote }}
{{- with $admin.dicomwebUrl }}
- {name: MICROPACS_ADMIN__DICOMWEB_URL, value: {{ . | quote }}}
{{- end }}
{{- with $admin.viewerUrl }}
- {name: MICROPACS_ADMIN__VIEWER_URL, value: {{ . | quote }}}
{{- end }}
- {name: MICROPACS_ADMIN__SEND_TIMEOUT, value: {{ $admin.sendTimeout | quote }}}
- {name: MICROPACS_ADMIN__MAX_JOBS, value: {{ $admin.maxJobs | quote }}}
- {name: MICROPACS_ADMIN__PAGE_LIMIT, value: {{ $admin.pageLimit | quote }}}
{{- with include "micropacs.adminSessionKey" . }}
- name: MICROPACS_AUTH__SESSION_KEY
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: {{ $admin.sessionKey.existingSecretKey | default "sessionKey" }}}
{{- end }}
{{- /* Behind an Ingress that terminates TLS the pod sees plain HTTP: say the cookie is secure. */}}
{{- if or $admin.ingress.tls.secretName .Values.tls.http.secretName }}
- {name: MICROPACS_AUTH__SESSION_COOKIE_SECURE, value: "true"}
{{- end }}
{{- with $admin.oidcLogin }}
{{- if .clientId }}
{{- if ne $.Values.auth.backend "oidc" }}
{{- fail "admin.oidcLogin.clientId: single sign-on needs auth.backend oidc" }}
{{- end }}
- {name: MICROPACS_AUTH__OIDC_CLIENT_ID, value: {{ .clientId | quote }}}
- {name: MICROPACS_AUTH__OIDC_SCOPES, value: {{ .scopes | quote }}}
{{- with .redirectUrl }}
- {name: MICROPACS_AUTH__OIDC_REDIRECT_URL, value: {{ . | quote }}}
{{- end }}
{{- if .clientSecret.existingSecret }}
- name: MICROPACS_AUTH__OIDC_CLIENT_SECRET
  valueFrom:
    secretKeyRef: {name: {{ .clientSecret.existingSecret }}, key: {{ .clientSecret.existingSecretKey | default "clientSecret" }}}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
