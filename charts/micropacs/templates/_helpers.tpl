{{/* Names, labels and the Deployment every service shares. */}}

{{- define "micropacs.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "micropacs.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
micropacs.io/site: {{ .Values.site.name | quote }}
{{- end -}}

{{- define "micropacs.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service }}
{{- end -}}

{{- define "micropacs.s3Secret" -}}
{{- .Values.objectStore.existingSecret | default (printf "%s-s3" (include "micropacs.fullname" .)) -}}
{{- end -}}

{{/* A Service's annotations: the internal LoadBalancer ones first, its own last (they win).
     dict "root" $ "svc" .Values.<service>.service */}}
{{- define "micropacs.serviceAnnotations" -}}
{{- $annotations := dict -}}
{{- if and (eq .svc.type "LoadBalancer") .svc.internal -}}
{{- $annotations = merge $annotations (deepCopy (.root.Values.internalLoadBalancerAnnotations | default dict)) -}}
{{- end -}}
{{- $annotations = mergeOverwrite $annotations (deepCopy (.svc.annotations | default dict)) -}}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A DICOM port reachable from outside the cluster needs the networks allowed to call it:
     the release is refused without networkPolicy.dicomFrom. dict "root" $ "svc" … "name" … */}}
{{- define "micropacs.exposedDicom" -}}
{{- if and (ne .svc.type "ClusterIP") (empty .root.Values.networkPolicy.dicomFrom) -}}
{{- fail (printf "%s.service.type is %s: set networkPolicy.dicomFrom to the CIDRs of the modalities and workstations that may call it" .name .svc.type) -}}
{{- end -}}
{{- if eq .svc.type "LoadBalancer" }}
loadBalancerSourceRanges:
  {{- /* A Service that carries HTTP too (qr) lets its callers through as well. */}}
  {{- $ranges := .root.Values.networkPolicy.dicomFrom }}
  {{- if .withHttp }}{{ $ranges = concat $ranges .root.Values.networkPolicy.httpFrom | uniq }}{{ end }}
  {{- toYaml $ranges | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The MLLP port reachable from outside the cluster needs the RIS's networks:
     the release is refused without networkPolicy.hl7From. dict "root" $ "svc" … */}}
{{- define "micropacs.exposedHl7" -}}
{{- if and (ne .svc.type "ClusterIP") (empty .root.Values.networkPolicy.hl7From) -}}
{{- fail (printf "worklist.hl7Service.type is %s: set networkPolicy.hl7From to the CIDRs of the RIS that sends HL7" .svc.type) -}}
{{- end -}}
{{- if eq .svc.type "LoadBalancer" }}
loadBalancerSourceRanges:
  {{- toYaml .root.Values.networkPolicy.hl7From | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The DICOM port, and DICOM TLS beside it once a certificate Secret is named. */}}
{{- define "micropacs.dicomServicePorts" -}}
- name: dicom
  port: {{ .port }}
  targetPort: dicom
  protocol: TCP
  {{- with .nodePort }}
  nodePort: {{ . }}
  {{- end }}
{{- if .root.Values.tls.dicom.secretName }}
- name: dicom-tls
  port: {{ .root.Values.tls.dicom.port }}
  targetPort: dicom-tls
  protocol: TCP
{{- end }}
{{- end -}}

{{/* The Deployment of one service: dict "root" $ "service" "ingest|index|qr|worklist|admin|router",
     and optionally "component" (the name and label of a second Deployment of the same
     service) and "single" (one pod, replaced by Recreate: never two at once). */}}
{{- define "micropacs.deployment" -}}
{{- $root := .root -}}
{{- $values := index $root.Values .service -}}
{{- $component := .component | default .service -}}
{{- $name := printf "%s-%s" (include "micropacs.fullname" $root) $component -}}
{{- /* index and admin answer no DICOM (admin only opens associations, to send and verify). */}}
{{- $dicom := not (has .service (list "index" "admin")) -}}
{{- $dicomTls := and $dicom $root.Values.tls.dicom.secretName -}}
{{- $httpTls := $root.Values.tls.http.secretName -}}
{{- $scheme := ternary "HTTPS" "HTTP" (not (empty $httpTls)) -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "micropacs.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
spec:
  {{- if .single }}
  replicas: 1
  {{- else if not $values.autoscaling.enabled }}
  replicas: {{ $values.replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "micropacs.selector" (dict "root" $root "service" $component) | nindent 6 }}
  strategy:
    {{- if .single }}
    type: Recreate
    {{- else }}
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}
    {{- end }}
  template:
    metadata:
      labels:
        {{- include "micropacs.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ $component }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/common/configmap.yaml") $root | sha256sum }}
        {{- if eq .service "router" }}
        checksum/router: {{ include (print $root.Template.BasePath "/router/configmap.yaml") $root | sha256sum }}
        {{- else if and (eq .service "ingest") $root.Values.router.enabled $root.Values.router.rules }}
        checksum/rules: {{ toYaml $root.Values.router.rules | sha256sum }}
        {{- end }}
    spec:
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: 60
      containers:
        - name: {{ .service }}
          image: "{{ $root.Values.image.repository }}:{{ $root.Values.image.tag | default $root.Chart.AppVersion }}"
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: ["run", {{ .service | quote }}]
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          envFrom:
            - configMapRef:
                name: {{ include "micropacs.fullname" $root }}
          env:
            {{- if eq .service "ingest" }}
            - name: MICROPACS_DICOM__WORKERS
              value: {{ $values.workers | quote }}
            {{- end }}
            {{- if eq .service "worklist" }}
            {{- /* The listener's default is loopback, which the Service cannot reach. */}}
            - {name: MICROPACS_WORKLIST__HL7_HOST, value: "0.0.0.0"}
            - {name: MICROPACS_WORKLIST__HL7_PORT, value: "2575"}
            {{- /* The listener refuses to start on 0.0.0.0 without an allow-list. */}}
            - name: MICROPACS_WORKLIST__HL7_ALLOWED_FROM
              value: {{ default $values.hl7PodCidrs $root.Values.networkPolicy.hl7From | toJson | quote }}
            - name: MICROPACS_WORKLIST__MISSING_IMAGES_AFTER
              value: {{ $values.missingImagesAfter | quote }}
            {{- end }}
            {{- if eq .service "admin" }}
            {{- include "micropacs.adminEnv" $root | nindent 12 }}
            {{- end }}
            {{- if eq .service "router" }}
            {{- include "micropacs.routerEnv" (dict "root" $root "scheduled" (eq $component "router-retention")) | nindent 12 }}
            {{- end }}
            {{- if and (eq .service "ingest") $root.Values.router.enabled $root.Values.router.rules }}
            {{- /* The rules' coercions are applied by ingest before it stores (docs/routing.md). */}}
            - {name: MICROPACS_ROUTER__RULES_FILE, value: /etc/micropacs/router/rules.yaml}
            {{- end }}
            {{- if and (eq .service "qr") $root.Values.admin.enabled $root.Values.admin.sessionKey.existingSecret }}
            {{- /* qr checks the admin's session cookies: the web UI's thumbnails and previews. */}}
            - name: MICROPACS_AUTH__SESSION_KEY
              valueFrom:
                secretKeyRef: {name: {{ $root.Values.admin.sessionKey.existingSecret }}, key: {{ $root.Values.admin.sessionKey.existingSecretKey | default "sessionKey" }}}
            {{- end }}
            {{- /* Only the services that keep, delete or send objects get the object store's credentials. */}}
            {{- if has .service (list "ingest" "index" "qr" "admin" "router") }}
            - name: MICROPACS_S3__ACCESS_KEY
              valueFrom:
                secretKeyRef: {name: {{ include "micropacs.s3Secret" $root }}, key: accessKey}
            - name: MICROPACS_S3__SECRET_KEY
              valueFrom:
                secretKeyRef: {name: {{ include "micropacs.s3Secret" $root }}, key: secretKey}
            {{- end }}
            - name: MICROPACS_STORAGE__CATALOG_URL
              valueFrom:
                secretKeyRef:
                  name: {{ required "catalog.existingSecret: name the Secret that holds the MongoDB URL (it carries credentials, so never a plain value)" $root.Values.catalog.existingSecret }}
                  key: {{ $root.Values.catalog.existingSecretKey | default "url" }}
            {{- /* The TLS settings take effect with the image's TLS support. */}}
            {{- if $dicomTls }}
            - {name: MICROPACS_DICOM__TLS__PORT, value: "2762"}
            - {name: MICROPACS_DICOM__TLS__CERT_FILE, value: /etc/micropacs/tls/dicom/tls.crt}
            - {name: MICROPACS_DICOM__TLS__KEY_FILE, value: /etc/micropacs/tls/dicom/tls.key}
            {{- if $root.Values.tls.dicom.verifyClients }}
            - {name: MICROPACS_DICOM__TLS__CA_FILE, value: /etc/micropacs/tls/dicom/ca.crt}
            {{- end }}
            {{- end }}
            {{- if $httpTls }}
            - {name: MICROPACS_HTTP__TLS__CERT_FILE, value: /etc/micropacs/tls/http/tls.crt}
            - {name: MICROPACS_HTTP__TLS__KEY_FILE, value: /etc/micropacs/tls/http/tls.key}
            {{- end }}
          ports:
            {{- if $dicom }}
            - {name: dicom, containerPort: 11112, protocol: TCP}
            {{- if $dicomTls }}
            - {name: dicom-tls, containerPort: 2762, protocol: TCP}
            {{- end }}
            {{- end }}
            {{- if eq .service "worklist" }}
            - {name: hl7, containerPort: 2575, protocol: TCP}
            {{- end }}
            - {name: http, containerPort: 8080, protocol: TCP}
          readinessProbe:
            httpGet: {path: /readyz, port: http, scheme: {{ $scheme }}}
            periodSeconds: 10
            timeoutSeconds: 6
            failureThreshold: 3
          livenessProbe:
            httpGet: {path: /healthz, port: http, scheme: {{ $scheme }}}
            initialDelaySeconds: 10
            periodSeconds: 15
            failureThreshold: 4
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          volumeMounts:
            - {name: data, mountPath: /var/lib/micropacs}
            - {name: tmp, mountPath: /tmp}
            {{- if $dicomTls }}
            - {name: tls-dicom, mountPath: /etc/micropacs/tls/dicom, readOnly: true}
            {{- end }}
            {{- if $httpTls }}
            - {name: tls-http, mountPath: /etc/micropacs/tls/http, readOnly: true}
            {{- end }}
            {{- if or (and (eq .service "router") (include "micropacs.routerFiles" $root)) (and (eq .service "ingest") $root.Values.router.enabled $root.Values.router.rules) }}
            - {name: router-files, mountPath: /etc/micropacs/router, readOnly: true}
            {{- end }}
      volumes:
        - name: data
          emptyDir: {}
        - name: tmp
          emptyDir: {}
        {{- if $dicomTls }}
        - name: tls-dicom
          secret: {secretName: {{ $dicomTls }}, defaultMode: 0440}
        {{- end }}
        {{- if $httpTls }}
        - name: tls-http
          secret: {secretName: {{ $httpTls }}, defaultMode: 0440}
        {{- end }}
        {{- if or (and (eq .service "router") (include "micropacs.routerFiles" $root)) (and (eq .service "ingest") $root.Values.router.enabled $root.Values.router.rules) }}
        - name: router-files
          configMap: {name: {{ include "micropacs.fullname" $root }}-router}
        {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{/* HorizontalPodAutoscaler: dict "root" $ "service" … "max" N */}}
{{- define "micropacs.hpa" -}}
{{- $values := index .root.Values .service -}}
{{- if $values.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ printf "%s-%s" (include "micropacs.fullname" .root) .service }}
  labels:
    {{- include "micropacs.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .service }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ printf "%s-%s" (include "micropacs.fullname" .root) .service }}
  minReplicas: {{ $values.autoscaling.minReplicas }}
  maxReplicas: {{ .max }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target: {type: Utilization, averageUtilization: {{ $values.autoscaling.targetCPUUtilizationPercentage }}}
{{- end }}
{{- end -}}

{{/* PodDisruptionBudget: dict "root" $ "service" … */}}
{{- define "micropacs.pdb" -}}
{{- $values := index .root.Values .service -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ printf "%s-%s" (include "micropacs.fullname" .root) .service }}
  labels:
    {{- include "micropacs.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .service }}
spec:
  minAvailable: {{ $values.podDisruptionBudget.minAvailable }}
  selector:
    matchLabels:
      {{- include "micropacs.selector" . | nindent 6 }}
{{- end -}}
