/**
 * faas Node.js runtime: a Lambda Runtime API client for `exports.handler` functions.
 *
 * Started by the node as `node bootstrap.js` with cwd = LAMBDA_TASK_ROOT and the Lambda
 * environment. It reproduces the observable behaviour of AWS's Node.js runtime
 * (aws-lambda-nodejs-runtime-interface-client): handler loading and its Runtime.* init
 * errors, the context object, async and callback handlers (including
 * callbackWaitsForEmptyEventLoop), the error JSON, console patching and the log line
 * format, unhandled rejections and uncaught exceptions, and response streaming.
 * No dependencies beyond Node's standard library. See README.md for the deviations.
 */

'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const util = require('util');
const { pathToFileURL } = require('url');

const API_PREFIX = '/2018-06-01/runtime';
const ERROR_TYPE_HEADER = 'Lambda-Runtime-Function-Error-Type';
const ERROR_BODY_TRAILER = 'Lambda-Runtime-Function-Error-Body';
const RESPONSE_MODE_HEADER = 'Lambda-Runtime-Function-Response-Mode';
// Exit statuses: a failed init (and a Runtime API that tells us to stop) exits 1;
// AWS's client exits 128 after an unhandled rejection and 129 after an uncaught exception.
const EXIT_INIT_FAILED = 1;
const EXIT_RUNTIME_API = 1;
const EXIT_UNHANDLED_REJECTION = 128;
const EXIT_UNCAUGHT_EXCEPTION = 129;

// ---------------------------------------------------------------------------------------
// Errors (names and messages as AWS's runtime produces them)

class ImportModuleError extends Error {}
class HandlerNotFound extends Error {}
class MalformedHandlerName extends Error {}
class UserCodeSyntaxError extends Error {}
class MalformedStreamingHandler extends Error {}
class InvalidStreamingOperation extends Error {}
class NodeJsExit extends Error {
  constructor() {
    super(
      'The Lambda runtime client detected an unexpected Node.js exit code. This is most ' +
        'commonly caused by a Promise that was never settled. For more information, see ' +
        'https://nodejs.org/docs/latest/api/process.html#exit-codes',
    );
  }
}
function safeString(value) {
  try {
    return String(value);
  } catch (_err) {
    return Object.prototype.toString.call(value);
  }
}

class UnhandledPromiseRejection extends Error {
  constructor(reason, promise) {
    super(reason === undefined ? undefined : safeString(reason));
    this.reason = reason;
    this.promise = promise;
  }
}
for (const cls of [
  ImportModuleError,
  HandlerNotFound,
  MalformedHandlerName,
  UserCodeSyntaxError,
  MalformedStreamingHandler,
  InvalidStreamingOperation,
  NodeJsExit,
  UnhandledPromiseRejection,
]) {
  cls.prototype.name = `Runtime.${cls.name}`;
}

function looksLikeError(obj) {
  return Boolean(
    obj &&
      obj.name &&
      obj.message &&
      obj.stack &&
      typeof obj.name === 'string' &&
      typeof obj.message === 'string' &&
      typeof obj.stack === 'string',
  );
}

function intoError(err) {
  return err instanceof Error ? err : new Error(err);
}

/** The error document posted to the Runtime API: AWS Node's `{errorType, errorMessage, trace}`. */
function toRapidResponse(error) {
  try {
    if (util.types.isNativeError(error) || looksLikeError(error)) {
      return {
        errorType: error.name,
        errorMessage: error.message,
        trace: typeof error.stack === 'string' ? error.stack.split('\n') : [],
      };
    }
    return { errorType: typeof error, errorMessage: String(error), trace: [] };
  } catch (_err) {
    return {
      errorType: 'handled',
      errorMessage:
        'callback called with Error argument, but there was a problem while retrieving ' +
        'one or more of its message, name, and stack',
      trace: [],
    };
  }
}

function withEnumerableProperties(value) {
  if (value instanceof Error) {
    const ret = Object.assign(
      { errorType: value.name, errorMessage: value.message, code: value.code },
      value,
    );
    if (typeof value.stack === 'string') {
      ret.stack = value.stack.split('\n');
    }
    return ret;
  }
  return value;
}

/** The text-mode log rendering of an error (always starts with a tab, as AWS's does). */
function toFormatted(error) {
  try {
    return '\t' + JSON.stringify(error, (_k, v) => withEnumerableProperties(v));
  } catch (_err) {
    return '\t' + JSON.stringify(toRapidResponse(error));
  }
}

// ---------------------------------------------------------------------------------------
// Console patching: `<ISO time>\t<request id>\t<LEVEL>\t<message>` records

const REQUEST_ID = Symbol.for('aws.lambda.runtime.requestId');
const TENANT_ID = Symbol.for('aws.lambda.runtime.tenantId');
const LEVELS = Object.freeze({
  TRACE: { name: 'TRACE', priority: 1, tlvMask: 0b00100 },
  DEBUG: { name: 'DEBUG', priority: 2, tlvMask: 0b01000 },
  INFO: { name: 'INFO', priority: 3, tlvMask: 0b01100 },
  WARN: { name: 'WARN', priority: 4, tlvMask: 0b10000 },
  ERROR: { name: 'ERROR', priority: 5, tlvMask: 0b10100 },
  FATAL: { name: 'FATAL', priority: 6, tlvMask: 0b11000 },
});
const structuredConsole = { logError: () => {} };

function setCurrentRequestId(id) {
  global[REQUEST_ID] = id;
}

function jsonErrorReplacer(_key, value) {
  if (value instanceof Error) {
    return Object.assign(
      {
        errorType: value?.constructor?.name ?? 'UnknownError',
        errorMessage: value.message,
        stackTrace: typeof value.stack === 'string' ? value.stack.split('\n') : value.stack,
      },
      value,
    );
  }
  return value;
}

function formatJsonMessage(timestamp, requestId, tenantId, level, ...params) {
  const result = { timestamp, level: level.name, requestId };
  if (tenantId !== undefined && tenantId !== null) {
    result.tenantId = tenantId;
  }
  if (params.length === 1) {
    result.message = params[0];
    try {
      return JSON.stringify(result, jsonErrorReplacer);
    } catch (_err) {
      result.message = util.format(result.message);
      return JSON.stringify(result);
    }
  }
  result.message = util.format(...params);
  for (const param of params) {
    if (param instanceof Error) {
      result.errorType = param?.constructor?.name ?? 'UnknownError';
      result.errorMessage = param.message;
      result.stackTrace = typeof param.stack === 'string' ? param.stack.split('\n') : [];
      break;
    }
  }
  return JSON.stringify(result);
}

function formatRecord(json, level, params) {
  const timestamp = new Date().toISOString();
  if (json) {
    return formatJsonMessage(timestamp, global[REQUEST_ID], global[TENANT_ID], level, ...params);
  }
  return `${timestamp}\t${global[REQUEST_ID]}\t${level.name}\t${util.format(...params)}`;
}

function stdoutLogger(json) {
  // One record per line: AWS turns the message's own newlines into carriage returns so
  // that a line-oriented log collector keeps a multi-line message (a stack) as one event.
  return (level, params) => {
    process.stdout.write(formatRecord(json, level, params).replace(/\n/g, '\r') + '\n');
  };
}

function telemetryFdLogger(json, fd) {
  // Framed records: 4-byte type | 4-byte length | 8-byte µs timestamp | message (big-endian).
  const header = Buffer.alloc(16);
  return (level, params) => {
    const now = Date.now();
    let message = formatRecord(json, level, params);
    if (!json) {
      message += '\n';
    }
    const bytes = Buffer.from(message, 'utf8');
    const frameType = json ? 0xa55a0002 : 0xa55a0003;
    header.writeUInt32BE((frameType | level.tlvMask) >>> 0, 0);
    header.writeInt32BE(bytes.length, 4);
    header.writeBigInt64BE(BigInt(now) * 1000n, 8);
    fs.writeSync(fd, header);
    fs.writeSync(fd, bytes);
  };
}

function patchConsole() {
  const json = (process.env.AWS_LAMBDA_LOG_FORMAT || '').toUpperCase() === 'JSON';
  let log;
  const fdText = process.env._LAMBDA_TELEMETRY_LOG_FD;
  if (fdText !== undefined) {
    delete process.env._LAMBDA_TELEMETRY_LOG_FD;
    log = telemetryFdLogger(json, parseInt(fdText, 10));
  } else {
    log = stdoutLogger(json);
  }
  const threshold = LEVELS[(process.env.AWS_LAMBDA_LOG_LEVEL || '').toUpperCase()] || LEVELS.TRACE;
  const method = (level) =>
    level.priority >= threshold.priority ? (...params) => log(level, params) : () => {};
  console.trace = method(LEVELS.TRACE);
  console.debug = method(LEVELS.DEBUG);
  console.info = method(LEVELS.INFO);
  console.log = console.info;
  console.warn = method(LEVELS.WARN);
  console.error = method(LEVELS.ERROR);
  console.fatal = (...params) => log(LEVELS.FATAL, params);
  structuredConsole.logError = json
    ? (_msg, err) => console.error(intoError(err))
    : (msg, err) => console.error(msg, toFormatted(intoError(err)));
}

// ---------------------------------------------------------------------------------------
// The 'beforeExit' hook: completes an invocation once the event loop has drained

const BEFORE_EXIT = Symbol.for('aws.lambda.beforeExit');
const NO_OP = () => {};
const BeforeExitListener = {
  invoke: () => {
    const listener = global[BEFORE_EXIT];
    global[BEFORE_EXIT] = NO_OP;
    listener();
  },
  reset: () => {
    global[BEFORE_EXIT] = NO_OP;
  },
  set: (listener) => {
    global[BEFORE_EXIT] = listener;
  },
};

// ---------------------------------------------------------------------------------------
// Runtime API client

function fatal(message) {
  process.stderr.write(`faas nodejs runtime: ${message}\n`);
  process.exit(EXIT_RUNTIME_API);
}

/** Header values Node accepts (no control characters, no DEL, nothing past latin-1). */
function headerValue(value) {
  return String(value).replace(/[^\t\x20-\x7e\x80-\xff]/g, '');
}

function serializeResponse(result) {
  let text;
  try {
    text = JSON.stringify(result === undefined ? null : result);
  } catch (_err) {
    throw new Error('Unable to stringify response body');
  }
  // JSON.stringify answers undefined for functions and symbols: Lambda sees null.
  return text === undefined ? 'null' : text;
}

class RuntimeApiClient {
  constructor(hostPort) {
    const colon = hostPort.lastIndexOf(':');
    this.hostname = colon > 0 ? hostPort.slice(0, colon) : hostPort;
    this.port = colon > 0 ? parseInt(hostPort.slice(colon + 1), 10) : 80;
    if (this.hostname.startsWith('[') && this.hostname.endsWith(']')) {
      this.hostname = this.hostname.slice(1, -1);
    }
    // Free keep-alive sockets are unref'd by Node, so they never keep the loop alive.
    this.agent = new http.Agent({ keepAlive: true });
  }

  /** One request; resolves to {status, headers, body}; rejects on transport errors. */
  request(method, urlPath, headers, body, retried = false) {
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          hostname: this.hostname,
          port: this.port,
          path: urlPath,
          method,
          headers,
          agent: this.agent,
        },
        (res) => {
          const chunks = [];
          res.on('data', (chunk) => chunks.push(chunk));
          res.on('end', () =>
            resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }),
          );
          res.on('error', reject);
        },
      );
      req.on('error', (err) => {
        // The server may close an idle keep-alive connection just as we reuse it.
        if (!retried && req.reusedSocket && err.code === 'ECONNRESET') {
          this.request(method, urlPath, headers, body, true).then(resolve, reject);
        } else {
          reject(err);
        }
      });
      req.end(body);
    });
  }

  /** A request whose failure (transport or non-2xx) ends the process, unless tolerated. */
  async send(method, urlPath, headers, body, mustSucceed = true) {
    let res;
    try {
      res = await this.request(method, urlPath, headers, body);
    } catch (err) {
      if (!mustSucceed) {
        return null;
      }
      fatal(`${method} ${urlPath} failed: ${err && err.message}`);
    }
    if (mustSucceed && (res.status < 200 || res.status > 299)) {
      fatal(`Runtime API answered ${res.status} to ${method} ${urlPath}: ${res.body.toString()}`);
    }
    return res;
  }

  /** POST JSON; exit(1) unless the Runtime API answers 2xx (or mustSucceed is false). */
  post(urlPath, bodyText, extraHeaders, { mustSucceed = true } = {}) {
    const body = Buffer.from(bodyText, 'utf8');
    const headers = Object.assign(
      { 'Content-Type': 'application/json', 'Content-Length': body.length },
      extraHeaders,
    );
    return this.send('POST', urlPath, headers, body, mustSucceed);
  }

  async nextInvocation() {
    const res = await this.send('GET', `${API_PREFIX}/invocation/next`, {}, undefined);
    return { bodyJson: res.body.toString('utf8'), headers: res.headers };
  }

  /** Serializes synchronously (may throw), then posts; resolves once the API answered. */
  postInvocationResponse(result, id) {
    const bodyText = serializeResponse(result);
    return this.post(`${API_PREFIX}/invocation/${encodeURIComponent(id)}/response`, bodyText, {});
  }

  postInvocationError(error, id, options) {
    const response = toRapidResponse(error);
    return this.post(
      `${API_PREFIX}/invocation/${encodeURIComponent(id)}/error`,
      JSON.stringify(response),
      { [ERROR_TYPE_HEADER]: headerValue(response.errorType) },
      options,
    );
  }

  postInitError(error, options) {
    const response = toRapidResponse(error);
    // AWS's Node client posts {errorType, errorMessage, trace}; the Runtime API's documented
    // init-error body names the list stackTrace. Send both so either reader finds it.
    response.stackTrace = response.trace;
    return this.post(
      `${API_PREFIX}/init/error`,
      JSON.stringify(response),
      { [ERROR_TYPE_HEADER]: headerValue(response.errorType) },
      options,
    );
  }

  /** A chunked, streaming POST of the response; resolves `responseDone` when answered. */
  streamInvocationResponse(id) {
    let resolveDone;
    let rejectDone;
    const responseDone = new Promise((resolve, reject) => {
      resolveDone = resolve;
      rejectDone = reject;
    });
    const req = http.request(
      {
        hostname: this.hostname,
        port: this.port,
        path: `${API_PREFIX}/invocation/${encodeURIComponent(id)}/response`,
        method: 'POST',
        headers: {
          [RESPONSE_MODE_HEADER]: 'streaming',
          Trailer: `${ERROR_TYPE_HEADER}, ${ERROR_BODY_TRAILER}`,
          'Content-Type': 'application/octet-stream',
          'Transfer-Encoding': 'chunked',
        },
        agent: this.agent,
      },
      (res) => {
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.on('end', () => resolveDone({ status: res.statusCode, body: Buffer.concat(chunks) }));
        res.on('error', rejectDone);
      },
    );
    req.on('error', rejectDone);
    return { req, responseDone };
  }
}

// ---------------------------------------------------------------------------------------
// Loading the handler

const FUNCTION_EXPR = /^([^.]*)\.(.*)$/;
const HANDLER_STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const HANDLER_HIGHWATERMARK = Symbol.for('aws.lambda.runtime.handler.streaming.highWaterMark');
const STREAM_RESPONSE = 'response';
const HTTP_INTEGRATION_CONTENT_TYPE = 'application/vnd.awslambda.http-integration-response';

class HttpResponseStream {
  static from(underlyingStream, prelude) {
    underlyingStream.setContentType(HTTP_INTEGRATION_CONTENT_TYPE);
    const metadataPrelude = JSON.stringify(prelude);
    underlyingStream._onBeforeFirstWrite = (write) => {
      write(metadataPrelude);
      write(new Uint8Array(8));
    };
    return underlyingStream;
  }
}

function installAwsLambdaGlobal() {
  const off = process.env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA;
  if (off === '1' || off === 'true') {
    return;
  }
  globalThis.awslambda = {
    streamifyResponse: (handler, options) => {
      handler[HANDLER_STREAMING] = STREAM_RESPONSE;
      if (typeof options?.highWaterMark === 'number') {
        handler[HANDLER_HIGHWATERMARK] = parseInt(options.highWaterMark, 10);
      }
      return handler;
    },
    HttpResponseStream,
  };
}

function tryRequireFile(file) {
  return fs.existsSync(file) ? require(file) : undefined;
}

async function tryImportFile(file) {
  return fs.existsSync(file) ? import(pathToFileURL(file).href) : undefined;
}

/** Whether the nearest package.json above `folder` says "type": "module". */
function folderIsModuleType(folder) {
  if (folder.endsWith('/node_modules')) {
    return false;
  }
  const pj = path.join(folder, 'package.json');
  if (fs.existsSync(pj)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(pj, 'utf8'));
      if (pkg) {
        return pkg.type === 'module';
      }
    } catch (err) {
      console.warn(
        `${pj} cannot be read, it will be ignored for ES module detection purposes.`,
        err,
      );
      return false;
    }
  }
  const parent = path.resolve(folder, '..');
  return parent === folder ? false : folderIsModuleType(parent);
}

/** AWS's lookup order: extensionless, .js (CommonJS), .js (ESM), .mjs, .cjs, then require. */
async function tryLoad(appRoot, moduleRoot, moduleName) {
  const base = path.resolve(appRoot, moduleRoot, moduleName);
  const extensionless = tryRequireFile(base);
  if (extensionless) {
    return extensionless;
  }
  const esmPackage = folderIsModuleType(path.dirname(base));
  if (!esmPackage) {
    const loaded = tryRequireFile(base + '.js');
    if (loaded) {
      return loaded;
    }
  }
  const loaded =
    (esmPackage && (await tryImportFile(base + '.js'))) ||
    (await tryImportFile(base + '.mjs')) ||
    tryRequireFile(base + '.cjs');
  if (loaded) {
    return loaded;
  }
  return require(require.resolve(moduleName, { paths: [appRoot, moduleRoot] }));
}

async function loadUserApp(appRoot, moduleRoot, moduleName) {
  installAwsLambdaGlobal();
  try {
    return await tryLoad(appRoot, moduleRoot, moduleName);
  } catch (err) {
    if (err instanceof SyntaxError) {
      throw new UserCodeSyntaxError(err);
    }
    if (err && (err.code === 'MODULE_NOT_FOUND' || err.code === 'ERR_MODULE_NOT_FOUND')) {
      throw new ImportModuleError(err);
    }
    throw err;
  }
}

async function loadHandler(appRoot, fullHandlerString) {
  if (fullHandlerString.includes('..')) {
    throw new MalformedHandlerName(
      `'${fullHandlerString}' is not a valid handler name. Use absolute paths when ` +
        'specifying root directories in handler names.',
    );
  }
  const handlerString = path.basename(fullHandlerString);
  const moduleRoot = fullHandlerString.substring(0, fullHandlerString.indexOf(handlerString));
  const match = handlerString.match(FUNCTION_EXPR);
  if (!match || match.length !== 3) {
    throw new MalformedHandlerName('Bad handler');
  }
  const [, moduleName, handlerPath] = match;
  const userApp = await loadUserApp(appRoot, moduleRoot, moduleName);
  const handlerFunc = handlerPath
    .split('.')
    .reduce((nested, key) => nested && nested[key], userApp);
  if (!handlerFunc) {
    throw new HandlerNotFound(`${fullHandlerString} is undefined or not exported`);
  }
  if (typeof handlerFunc !== 'function') {
    throw new HandlerNotFound(`${fullHandlerString} is not a function`);
  }
  return handlerFunc;
}

function handlerMetadata(handler) {
  const mode = handler[HANDLER_STREAMING];
  let streaming = false;
  if (mode !== undefined && mode !== null && mode !== false) {
    if (mode !== STREAM_RESPONSE) {
      throw new MalformedStreamingHandler('Only response streaming is supported.');
    }
    streaming = true;
  }
  const hwm = parseInt(handler[HANDLER_HIGHWATERMARK], 10);
  let isAsync = false;
  try {
    isAsync = handler.constructor && handler.constructor.name === 'AsyncFunction';
  } catch (_err) {
    isAsync = false;
  }
  return { streaming, highWaterMark: isNaN(hwm) ? undefined : hwm, isAsync };
}

// ---------------------------------------------------------------------------------------
// The context object

function parseJsonHeader(text, name) {
  if (text === undefined || text === '') {
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

class InvokeContext {
  constructor(headers) {
    this.headers = headers; // Node lower-cases header names
  }

  get invokeId() {
    return this.headers['lambda-runtime-aws-request-id'];
  }

  get tenantId() {
    return this.headers['lambda-runtime-aws-tenant-id'];
  }

  updateLoggingContext() {
    setCurrentRequestId(this.invokeId);
    global[TENANT_ID] = this.tenantId;
  }

  /** Adds the environment and header data to `base` (which keeps its accessors). */
  attachEnvironmentData(base) {
    const trace = this.headers['lambda-runtime-trace-id'];
    if (trace) {
      process.env._X_AMZN_TRACE_ID = trace;
    } else {
      delete process.env._X_AMZN_TRACE_ID;
    }
    const deadline = Number(this.headers['lambda-runtime-deadline-ms'] || 0);
    return Object.assign(
      base,
      {
        functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
        functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
        memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
        logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
        logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
      },
      {
        clientContext: parseJsonHeader(
          this.headers['lambda-runtime-client-context'],
          'ClientContext',
        ),
        identity: parseJsonHeader(this.headers['lambda-runtime-cognito-identity'], 'CognitoIdentity'),
        invokedFunctionArn: this.headers['lambda-runtime-invoked-function-arn'] || '',
        awsRequestId: this.invokeId,
        tenantId: this.tenantId,
        getRemainingTimeInMillis: () => deadline - Date.now(),
      },
    );
  }
}

/**
 * The node-style callback plus the part of the context holding callbackWaitsForEmptyEventLoop
 * and the legacy done/succeed/fail. Only the first call of any of them counts.
 */
function buildCallbackContext(client, id, scheduleNext) {
  const postError = (err, next) => {
    structuredConsole.logError('Invoke Error', err);
    client.postInvocationError(err, id).then(next);
  };

  let isCompleteInvoked = false;
  const complete = (result, next) => {
    if (isCompleteInvoked) {
      console.error(
        'Invocation has already been reported as done. Cannot call complete more than once per invocation.',
      );
      return;
    }
    isCompleteInvoked = true;
    client.postInvocationResponse(result, id).then(next);
  };

  let waitForEmptyEventLoop = true;
  const callback = (err, result) => {
    BeforeExitListener.reset();
    if (err !== undefined && err !== null) {
      postError(err, scheduleNext);
    } else if (!waitForEmptyEventLoop) {
      complete(result, scheduleNext);
    } else {
      BeforeExitListener.set(() => {
        setImmediate(() => complete(result, scheduleNext));
      });
    }
  };
  const done = (err, result) => {
    BeforeExitListener.reset();
    if (err !== undefined && err !== null) {
      postError(err, scheduleNext);
    } else {
      complete(result, scheduleNext);
    }
  };

  let finished = false;
  const onlyFirst =
    (fn) =>
    (...args) => {
      if (!finished) {
        fn(...args);
        finished = true;
      }
    };
  const context = {
    get callbackWaitsForEmptyEventLoop() {
      return waitForEmptyEventLoop;
    },
    set callbackWaitsForEmptyEventLoop(value) {
      waitForEmptyEventLoop = value;
    },
    succeed: onlyFirst((result) => done(null, result)),
    fail: onlyFirst((err) => (err === undefined || err === null ? done('handled') : done(err, null))),
    done: onlyFirst(done),
  };
  const markCompleted = () => {
    isCompleteInvoked = true;
  };
  return [onlyFirst(callback), context, markCompleted];
}

// ---------------------------------------------------------------------------------------
// Response streaming (awslambda.streamifyResponse)

function buildResponseStream(client, id, highWaterMark) {
  // highWaterMark (streamifyResponse option) is accepted but advisory: Node fixes an
  // OutgoingMessage's high-water mark when the request is created.
  void highWaterMark;
  const { req, responseDone } = client.streamInvocationResponse(id);
  let started = false;
  const origWrite = req.write.bind(req);
  const stream = {};
  stream.setContentType = (contentType) => {
    if (started) {
      throw new InvalidStreamingOperation('Cannot set content-type, too late.');
    }
    req.setHeader('Content-Type', contentType);
  };
  stream.write = (chunk, encoding, cb) => {
    if (typeof chunk !== 'string' && !Buffer.isBuffer(chunk) && !(chunk instanceof Uint8Array)) {
      chunk = JSON.stringify(chunk);
    }
    if (!started && typeof stream._onBeforeFirstWrite === 'function') {
      stream._onBeforeFirstWrite((ch) => origWrite(ch));
    }
    started = true;
    return origWrite(chunk, encoding, cb);
  };
  stream.end = (chunk, encoding, cb) => {
    if (typeof chunk === 'function') {
      cb = chunk;
      chunk = undefined;
    }
    if (chunk !== undefined && chunk !== null) {
      stream.write(chunk, encoding);
    } else if (!started && typeof stream._onBeforeFirstWrite === 'function') {
      stream._onBeforeFirstWrite((ch) => origWrite(ch));
      started = true;
    }
    req.end(cb);
    return stream;
  };
  for (const fn of [
    'cork',
    'uncork',
    'destroy',
    'addListener',
    'emit',
    'eventNames',
    'getMaxListeners',
    'listenerCount',
    'listeners',
    'off',
    'on',
    'once',
    'prependListener',
    'prependOnceListener',
    'rawListeners',
    'removeAllListeners',
    'removeListener',
    'setMaxListeners',
  ]) {
    stream[fn] = req[fn].bind(req);
  }
  for (const prop of [
    'destroyed',
    'writable',
    'writableFinished',
    'writableObjectMode',
    'writableEnded',
    'writableNeedDrain',
    'writableHighWaterMark',
    'writableCorked',
    'writableLength',
  ]) {
    Object.defineProperty(stream, prop, { get: () => req[prop], enumerable: true });
  }
  const fail = (err) => {
    structuredConsole.logError('Invoke Error', err);
    const error = toRapidResponse(err);
    if (!req.writableEnded) {
      req.addTrailers({
        [ERROR_TYPE_HEADER]: headerValue(error.errorType),
        [ERROR_BODY_TRAILER]: Buffer.from(JSON.stringify(error)).toString('base64'),
      });
      req.end();
    }
  };
  return { stream, responseDone, fail };
}

// ---------------------------------------------------------------------------------------
// The invoke loop

class Runtime {
  constructor(client, handler, metadata, errorCallbacks) {
    this.client = client;
    this.handler = handler;
    this.metadata = metadata;
    this.errorCallbacks = errorCallbacks;
  }

  scheduleIteration() {
    setImmediate(() => {
      const once = this.metadata.streaming ? this.handleOnceStreaming() : this.handleOnce();
      once.catch((err) => {
        console.log(`Unexpected Top Level Error: ${err && err.toString()}`);
        this.errorCallbacks.uncaughtException(err);
      });
    });
  }

  async nextInvokeContext() {
    const { bodyJson, headers } = await this.client.nextInvocation();
    const invokeContext = new InvokeContext(headers);
    if (!invokeContext.invokeId) {
      fatal('the Runtime API sent an invocation without Lambda-Runtime-Aws-Request-Id');
    }
    invokeContext.updateLoggingContext();
    return { bodyJson, invokeContext };
  }

  async handleOnce() {
    const { bodyJson, invokeContext } = await this.nextInvokeContext();
    const id = invokeContext.invokeId;
    const [callback, callbackContext, markCompleted] = buildCallbackContext(
      this.client,
      id,
      () => this.scheduleIteration(),
    );
    try {
      this.setErrorCallbacks(id);
      this.setDefaultExitListener(id, markCompleted);
      const result = this.handler(
        JSON.parse(bodyJson),
        invokeContext.attachEnvironmentData(callbackContext),
        callback,
      );
      if (isPromise(result)) {
        result.then(callbackContext.succeed, callbackContext.fail).catch(callbackContext.fail);
      }
    } catch (err) {
      callback(err);
    }
  }

  async handleOnceStreaming() {
    const { bodyJson, invokeContext } = await this.nextInvokeContext();
    const id = invokeContext.invokeId;
    let waitForEmptyEventLoop = true;
    const scheduleNext = () => {
      BeforeExitListener.reset();
      if (!waitForEmptyEventLoop) {
        this.scheduleIteration();
      } else {
        BeforeExitListener.set(() => setImmediate(() => this.scheduleIteration()));
      }
    };
    const { stream, responseDone, fail } = buildResponseStream(
      this.client,
      id,
      this.metadata.highWaterMark,
    );
    const checked = responseDone.then(
      (res) => {
        if (res.status < 200 || res.status > 299) {
          fatal(`Runtime API answered ${res.status} to the streamed response: ${res.body}`);
        }
      },
      (err) => fatal(`streaming the response failed: ${err && err.message}`),
    );
    this.setErrorCallbacks(id);
    BeforeExitListener.set(() => this.scheduleIteration());
    try {
      const context = invokeContext.attachEnvironmentData({
        get callbackWaitsForEmptyEventLoop() {
          return waitForEmptyEventLoop;
        },
        set callbackWaitsForEmptyEventLoop(value) {
          waitForEmptyEventLoop = value;
        },
      });
      const result = this.handler(JSON.parse(bodyJson), stream, context);
      if (!isPromise(result)) {
        fail('Streaming does not support non-async handlers.');
        await checked;
        scheduleNext();
        return;
      }
      const value = await result;
      if (value !== undefined) {
        console.warn('Streaming handlers ignore return values.');
      }
      if (!stream.writableEnded) {
        fail('Response stream is not finished.');
      }
      await checked;
      scheduleNext();
    } catch (err) {
      fail(err);
      await checked;
      scheduleNext();
    }
  }

  /** Errors outside the handler's promise chain fail the current invoke and end the process. */
  setErrorCallbacks(id) {
    this.errorCallbacks.uncaughtException = (error) => {
      this.client
        .postInvocationError(error, id, { mustSucceed: false })
        .finally(() => process.exit(EXIT_UNCAUGHT_EXCEPTION));
    };
    this.errorCallbacks.unhandledRejection = (error) => {
      this.client
        .postInvocationError(error, id, { mustSucceed: false })
        .finally(() => process.exit(EXIT_UNHANDLED_REJECTION));
    };
  }

  /**
   * If the event loop drains before the handler finished: an async handler failed to settle
   * its promise (Runtime.NodeJsExit); a callback handler that never called back returns null.
   */
  setDefaultExitListener(id, markCompleted) {
    BeforeExitListener.set(() => {
      markCompleted();
      if (this.metadata.isAsync) {
        const error = new NodeJsExit();
        structuredConsole.logError('Invoke Error', error);
        this.client.postInvocationError(error, id).then(() => this.scheduleIteration());
      } else {
        this.client.postInvocationResponse(null, id).then(() => this.scheduleIteration());
      }
    });
  }
}

function isPromise(obj) {
  return Boolean(obj && obj.then && typeof obj.then === 'function');
}

// ---------------------------------------------------------------------------------------
// Entry point

async function main() {
  patchConsole();
  const endpoint = process.env.AWS_LAMBDA_RUNTIME_API;
  if (!endpoint) {
    process.stderr.write('faas nodejs runtime: AWS_LAMBDA_RUNTIME_API is not set\n');
    process.exit(EXIT_INIT_FAILED);
  }
  const client = new RuntimeApiClient(endpoint);

  let dying = false;
  const errorCallbacks = {
    uncaughtException: (error) => {
      client
        .postInitError(error, { mustSucceed: false })
        .finally(() => process.exit(EXIT_UNCAUGHT_EXCEPTION));
    },
    unhandledRejection: (error) => {
      client
        .postInitError(error, { mustSucceed: false })
        .finally(() => process.exit(EXIT_UNHANDLED_REJECTION));
    },
  };
  process.on('uncaughtException', (error) => {
    structuredConsole.logError('Uncaught Exception', error);
    if (!dying) {
      dying = true;
      errorCallbacks.uncaughtException(error);
    }
  });
  process.on('unhandledRejection', (reason, promise) => {
    const error = new UnhandledPromiseRejection(reason, promise);
    structuredConsole.logError('Unhandled Promise Rejection', error);
    if (!dying) {
      dying = true;
      errorCallbacks.unhandledRejection(error);
    }
  });
  BeforeExitListener.reset();
  process.on('beforeExit', BeforeExitListener.invoke);

  const appRoot = process.env.LAMBDA_TASK_ROOT || process.cwd();
  let handler;
  let metadata;
  try {
    handler = await loadHandler(appRoot, process.env._HANDLER || '');
    metadata = handlerMetadata(handler);
  } catch (err) {
    dying = true;
    structuredConsole.logError('Uncaught Exception', err);
    await client.postInitError(err, { mustSucceed: false });
    process.exit(EXIT_INIT_FAILED);
  }
  new Runtime(client, handler, metadata, errorCallbacks).scheduleIteration();
}

main();
