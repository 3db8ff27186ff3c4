/* squall_jni.c: the JNI side of org.squall.SquallClient (java/src): each native method calls
 * one function of the client library (include/squall/client.h) and turns its result into Java
 * objects, or its error into the matching SquallException. Watch events arrive on the client's
 * I/O thread, which is attached to the JVM (as a daemon) at its first event and detached when
 * it exits. */
#include <jni.h>
#include <pthread.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "org_squall_SquallClient.h"
#include "squall/client.h"

static JavaVM *g_vm;
static pthread_key_t g_attached; /* set on threads this library attached: detached at exit */

static void detach_at_exit(void *vm)
{
    (*(JavaVM *)vm)->DetachCurrentThread((JavaVM *)vm);
}

JNIEXPORT jint JNICALL JNI_OnLoad(JavaVM *vm, void *reserved)
{
    (void)reserved;
    g_vm = vm;
    if (pthread_key_create(&g_attached, detach_at_exit) != 0) {
        return JNI_ERR;
    }
    return JNI_VERSION_1_8;
}

/* ---- errors ---- */

static void throw_status(JNIEnv *env, int status, const char *msg, uint64_t version, int deleted)
{
    const char *cls = "org/squall/SquallException";
    const char *sig = "(ILjava/lang/String;Ljava/lang/String;)V";
    switch (status) {
    case SQ_ECONFLICT:
        cls = "org/squall/SquallException$Conflict";
        sig = "(ILjava/lang/String;Ljava/lang/String;J)V";
        break;
    case SQ_ENOTFOUND:
        cls = "org/squall/SquallException$NotFound";
        sig = "(ILjava/lang/String;Ljava/lang/String;Z)V";
        break;
    case SQ_ENOPOOL:
        cls = "org/squall/SquallException$NoPool";
        break;
    case SQ_EEXIST:
        cls = "org/squall/SquallException$Exists";
        break;
    case SQ_EINVAL:
    case SQ_EMSGSIZE:
        cls = "org/squall/SquallException$InvalidArgument";
        break;
    case SQ_ECLOSED:
        cls = "org/squall/SquallException$Closed";
        break;
    default:
        if (sq_err_transient(status)) {
            cls = "org/squall/SquallException$Unavailable";
        }
        break;
    }
    jclass c = (*env)->FindClass(env, cls);
    if (c == NULL) {
        return; /* NoClassDefFoundError pending */
    }
    jmethodID ctor = (*env)->GetMethodID(env, c, "<init>", sig);
    jstring name = (*env)->NewStringUTF(env, sq_err_name(status));
    jstring text = (*env)->NewStringUTF(env, msg != NULL && msg[0] ? msg : sq_strerror(status));
    if (ctor == NULL || name == NULL || text == NULL) {
        return;
    }
    jobject ex;
    if (status == SQ_ECONFLICT) {
        ex = (*env)->NewObject(env, c, ctor, (jint)status, name, text, (jlong)version);
    } else if (status == SQ_ENOTFOUND) {
        ex = (*env)->NewObject(env, c, ctor, (jint)status, name, text, (jboolean)(deleted != 0));
    } else {
        ex = (*env)->NewObject(env, c, ctor, (jint)status, name, text);
    }
    if (ex != NULL) {
        (*env)->Throw(env, (jthrowable)ex);
    }
}

static void throw_result(JNIEnv *env, const sq_kv_result *r)
{
    throw_status(env, r->status, r->message, r->version, r->deleted);
}

static void throw_oom(JNIEnv *env)
{
    jclass c = (*env)->FindClass(env, "java/lang/OutOfMemoryError");
    if (c != NULL) {
        (*env)->ThrowNew(env, c, "squall-jni");
    }
}

/* A Java string as a NUL-terminated UTF-8 copy (free it), or NULL with an exception pending. */
static char *utf8(JNIEnv *env, jstring s)
{
    if (s == NULL) {
        throw_status(env, SQ_EINVAL, "a key or path is needed (null)", 0, 0);
        return NULL;
    }
    jsize n = (*env)->GetStringUTFLength(env, s);
    char *out = malloc((size_t)n + 1);
    if (out == NULL) {
        throw_oom(env);
        return NULL;
    }
    (*env)->GetStringUTFRegion(env, s, 0, (*env)->GetStringLength(env, s), out);
    out[n] = '\0';
    return out;
}

static jbyteArray bytes(JNIEnv *env, const void *p, size_t n)
{
    jbyteArray a = (*env)->NewByteArray(env, (jsize)n);
    if (a != NULL && n > 0) {
        (*env)->SetByteArrayRegion(env, a, 0, (jsize)n, (const jbyte *)p);
    }
    return a;
}

/* Keys from the store are bytes, not always UTF-8 (NewStringUTF would take them as modified
 * UTF-8 and misread them): decoded as Java does, new String(bytes, "UTF-8"), bad bytes becoming
 * U+FFFD. NULL with an exception pending. */
static jstring key_string(JNIEnv *env, const char *k, size_t n)
{
    jclass sc = (*env)->FindClass(env, "java/lang/String");
    jmethodID ctor =
        sc != NULL ? (*env)->GetMethodID(env, sc, "<init>", "([BLjava/lang/String;)V") : NULL;
    jbyteArray b = ctor != NULL ? bytes(env, k, n) : NULL;
    jstring cs = b != NULL ? (*env)->NewStringUTF(env, "UTF-8") : NULL;
    jstring out = cs != NULL ? (jstring)(*env)->NewObject(env, sc, ctor, b, cs) : NULL;
    if (b != NULL) {
        (*env)->DeleteLocalRef(env, b);
    }
    if (cs != NULL) {
        (*env)->DeleteLocalRef(env, cs);
    }
    if (sc != NULL) {
        (*env)->DeleteLocalRef(env, sc);
    }
    return out;
}

static jlongArray pair(JNIEnv *env, uint64_t a, uint64_t b)
{
    jlongArray out = (*env)->NewLongArray(env, 2);
    if (out != NULL) {
        jlong v[2] = {(jlong)a, (jlong)b};
        (*env)->SetLongArrayRegion(env, out, 0, 2, v);
    }
    return out;
}

/* A put's or remove's outcome: {version, timestamp}, or NULL with its exception thrown. */
static jlongArray written(JNIEnv *env, int rc, sq_kv_result *r)
{
    jlongArray out = rc == 0 ? pair(env, r->version, r->timestamp) : NULL;
    if (rc != 0) {
        throw_result(env, r);
    }
    sq_kv_result_free(r);
    return out;
}

static sq_client *H(jlong h)
{
    return (sq_client *)(intptr_t)h;
}

/* ---- calls ---- */

JNIEXPORT jlong JNICALL Java_org_squall_SquallClient_open0(JNIEnv *env, jclass cls, jstring members,
                                                           jint timeout_ms)
{
    (void)cls;
    char *m = utf8(env, members);
    if (m == NULL) {
        return 0;
    }
    sq_client *c = NULL;
    char err[256] = "";
    int rc = sq_client_open(&c, m, timeout_ms, err, sizeof(err));
    free(m);
    if (rc != 0) {
        throw_status(env, rc, err, 0, 0);
        return 0;
    }
    return (jlong)(intptr_t)c;
}

JNIEXPORT jlong JNICALL Java_org_squall_SquallClient_openTls0(JNIEnv *env, jclass cls,
                                                              jstring members, jint timeout_ms,
                                                              jstring ca, jstring cert, jstring key)
{
    (void)cls;
    char *m = utf8(env, members);
    /* a null string stays NULL; one that cannot be converted has thrown */
    char *files[3] = {NULL, NULL, NULL};
    jstring given[3] = {ca, cert, key};
    bool ok = m != NULL;
    for (int i = 0; ok && i < 3; i++) {
        ok = given[i] == NULL || (files[i] = utf8(env, given[i])) != NULL;
    }
    sq_client *c = NULL;
    char err[1024] = "";
    int rc = 0;
    if (ok) {
        sq_client_tls tls = {.ca_file = files[0], .cert_file = files[1], .key_file = files[2]};
        rc = sq_client_open_tls(&c, m, timeout_ms, &tls, err, sizeof(err));
    }
    free(m);
    for (int i = 0; i < 3; i++) {
        free(files[i]);
    }
    if (!ok) {
        return 0;
    }
    if (rc != 0) {
        throw_status(env, rc, err, 0, 0);
        return 0;
    }
    return (jlong)(intptr_t)c;
}

JNIEXPORT void JNICALL Java_org_squall_SquallClient_close0(JNIEnv *env, jclass cls, jlong h)
{
    (void)env;
    (void)cls;
    sq_client_close(H(h));
}

JNIEXPORT jlongArray JNICALL Java_org_squall_SquallClient_put0(JNIEnv *env, jclass cls, jlong h,
                                                               jstring key, jbyteArray value,
                                                               jint mode, jlong if_version)
{
    (void)cls;
    if (value == NULL) {
        throw_status(env, SQ_EINVAL, "a value is needed (null)", 0, 0);
        return NULL;
    }
    char *k = utf8(env, key);
    if (k == NULL) {
        return NULL;
    }
    jsize n = (*env)->GetArrayLength(env, value);
    jbyte *v = malloc(n > 0 ? (size_t)n : 1);
    if (v == NULL) {
        free(k);
        throw_oom(env);
        return NULL;
    }
    (*env)->GetByteArrayRegion(env, value, 0, n, v);
    sq_put_opts o = {
        .if_version = mode == 1, .version = (uint64_t)if_version, .if_absent = mode == 2};
    sq_kv_result r = {0};
    int rc = sq_client_put(H(h), k, v, (size_t)n, &o, &r);
    free(v);
    free(k);
    return written(env, rc, &r);
}

JNIEXPORT jobject JNICALL Java_org_squall_SquallClient_get0(JNIEnv *env, jclass cls, jlong h,
                                                            jstring key, jint mode, jlong arg,
                                                            jboolean stable)
{
    (void)cls;
    char *k = utf8(env, key);
    if (k == NULL) {
        return NULL;
    }
    sq_get_opts o = {.stable = stable != 0};
    if (mode == 1) {
        o.at_version = 1;
        o.version = (uint64_t)arg;
    } else if (mode == 2) {
        o.at_time = 1;
        o.time_us = (uint64_t)arg;
    }
    sq_kv_result r = {0};
    jobject out = NULL;
    if (sq_client_get(H(h), k, &o, &r) != 0) {
        throw_result(env, &r);
    } else {
        jclass ec = (*env)->FindClass(env, "org/squall/Entry");
        jmethodID ctor =
            ec != NULL ? (*env)->GetMethodID(env, ec, "<init>", "(Ljava/lang/String;[BJJ)V") : NULL;
        jbyteArray val = bytes(env, r.value, r.size);
        if (ctor != NULL && val != NULL) {
            out = (*env)->NewObject(env, ec, ctor, key, val, (jlong)r.version, (jlong)r.timestamp);
        }
    }
    free(k);
    sq_kv_result_free(&r);
    return out;
}

JNIEXPORT jlongArray JNICALL Java_org_squall_SquallClient_delete0(JNIEnv *env, jclass cls, jlong h,
                                                                  jstring key, jboolean if_version,
                                                                  jlong version)
{
    (void)cls;
    char *k = utf8(env, key);
    if (k == NULL) {
        return NULL;
    }
    sq_put_opts o = {.if_version = if_version != 0, .version = (uint64_t)version};
    sq_kv_result r = {0};
    int rc = sq_client_remove(H(h), k, &o, &r);
    free(k);
    return written(env, rc, &r);
}

JNIEXPORT jobjectArray JNICALL Java_org_squall_SquallClient_items0(JNIEnv *env, jclass cls, jlong h,
                                                                   jint kind, jstring arg,
                                                                   jboolean at, jlong time_us)
{
    (void)cls;
    char *a = utf8(env, arg);
    if (a == NULL) {
        return NULL;
    }
    sq_kv_result r = {0};
    int rc = kind == 0 ? sq_client_list(H(h), a, at != 0, (uint64_t)time_us, &r)
                       : sq_client_history(H(h), a, &r);
    free(a);
    jobjectArray out = NULL;
    if (rc != 0) {
        throw_result(env, &r);
        sq_kv_result_free(&r);
        return NULL;
    }
    jclass ic = (*env)->FindClass(env, "org/squall/Item");
    jmethodID ctor =
        ic != NULL ? (*env)->GetMethodID(env, ic, "<init>", "(Ljava/lang/String;JJJZ)V") : NULL;
    size_t n = 0, pos = 0;
    sq_kv_item it;
    while (sq_kv_next_item(&r, &pos, &it) == 1) {
        n++;
    }
    if (ctor != NULL) {
        out = (*env)->NewObjectArray(env, (jsize)n, ic, NULL);
    }
    pos = 0;
    for (jsize i = 0; out != NULL && (size_t)i < n && sq_kv_next_item(&r, &pos, &it) == 1; i++) {
        jstring k = key_string(env, it.key, it.key_len);
        jobject o =
            k != NULL ? (*env)->NewObject(env, ic, ctor, k, (jlong)it.version, (jlong)it.timestamp,
                                          (jlong)it.size, (jboolean)(it.deleted != 0))
                      : NULL;
        if (o == NULL) {
            out = NULL; /* an exception is pending */
            break;
        }
        (*env)->SetObjectArrayElement(env, out, i, o);
        (*env)->DeleteLocalRef(env, o);
        (*env)->DeleteLocalRef(env, k);
    }
    sq_kv_result_free(&r);
    return out;
}

JNIEXPORT void JNICALL Java_org_squall_SquallClient_createPool0(JNIEnv *env, jclass cls, jlong h,
                                                                jstring path, jstring store,
                                                                jint shards)
{
    (void)cls;
    if (shards < 0) {
        throw_status(env, SQ_EINVAL, "shards must be >= 0", 0, 0);
        return;
    }
    char *p = utf8(env, path);
    char *s = p != NULL ? utf8(env, store) : NULL;
    if (s != NULL) {
        sq_kv_result r = {0};
        if (sq_client_pool_create(H(h), p, s, (uint32_t)shards, &r) != 0) {
            throw_result(env, &r);
        }
        sq_kv_result_free(&r);
    }
    free(p);
    free(s);
}

/* ---- watches ---- */

struct jwatch {
    jobject watch; /* global ref to the org.squall.Watch */
    jmethodID deliver;
};

static JNIEnv *attach(void)
{
    JNIEnv *env = NULL;
    if ((*g_vm)->GetEnv(g_vm, (void **)&env, JNI_VERSION_1_8) == JNI_OK) {
        return env;
    }
    if ((*g_vm)->AttachCurrentThreadAsDaemon(g_vm, (void **)&env, NULL) != JNI_OK) {
        return NULL;
    }
    pthread_setspecific(g_attached, g_vm);
    return env;
}

static void on_event(void *arg, const sq_kv_event *ev)
{
    struct jwatch *w = arg;
    JNIEnv *env = attach();
    if (env == NULL) {
        return;
    }
    (*env)->PushLocalFrame(env, 8);
    jstring k = key_string(env, ev->key, ev->key_len);
    jbyteArray v = bytes(env, ev->value, ev->size);
    if (k != NULL && v != NULL) {
        (*env)->CallVoidMethod(env, w->watch, w->deliver, k, v, (jlong)ev->version,
                               (jlong)ev->timestamp, (jboolean)(ev->deleted != 0), (jint)ev->shard);
    }
    if ((*env)->ExceptionCheck(env)) {
        (*env)->ExceptionDescribe(env); /* the consumer threw: printed, and the watch goes on */
        (*env)->ExceptionClear(env);
    }
    (*env)->PopLocalFrame(env, NULL);
}

JNIEXPORT jlongArray JNICALL Java_org_squall_SquallClient_watch0(JNIEnv *env, jclass cls, jlong h,
                                                                 jstring target, jlongArray from,
                                                                 jobject watch)
{
    (void)cls;
    char *t = utf8(env, target);
    if (t == NULL) {
        return NULL;
    }
    uint64_t starts[SQ_CLIENT_WATCH_SHARDS] = {0};
    jsize n = (*env)->GetArrayLength(env, from);
    n = n > SQ_CLIENT_WATCH_SHARDS ? SQ_CLIENT_WATCH_SHARDS : n;
    (*env)->GetLongArrayRegion(env, from, 0, n, (jlong *)starts);
    struct jwatch *w = calloc(1, sizeof(*w));
    jclass wc = (*env)->GetObjectClass(env, watch);
    if (w != NULL) {
        w->deliver = (*env)->GetMethodID(env, wc, "deliver", "(Ljava/lang/String;[BJJZI)V");
        w->watch = w->deliver != NULL ? (*env)->NewGlobalRef(env, watch) : NULL;
    }
    if (w == NULL || w->watch == NULL) {
        free(w);
        free(t);
        if (!(*env)->ExceptionCheck(env)) {
            throw_oom(env);
        }
        return NULL;
    }
    uint64_t id = 0;
    int rc = sq_client_watch_shards(H(h), t, starts, SQ_CLIENT_WATCH_SHARDS, on_event, w, &id);
    free(t);
    if (rc != 0) {
        (*env)->DeleteGlobalRef(env, w->watch);
        free(w);
        throw_status(env, rc, NULL, 0, 0);
        return NULL;
    }
    return pair(env, id, (uint64_t)(uintptr_t)w);
}

JNIEXPORT void JNICALL Java_org_squall_SquallClient_unwatch0(JNIEnv *env, jclass cls, jlong h,
                                                             jlong id, jlong ptr)
{
    (void)cls;
    struct jwatch *w = (struct jwatch *)(uintptr_t)ptr;
    if (h != 0 && sq_client_unwatch(H(h), (uint64_t)id) == SQ_EBUSY) {
        jclass c = (*env)->FindClass(env, "java/lang/IllegalStateException");
        if (c != NULL) {
            (*env)->ThrowNew(env, c,
                             "a watch cannot be closed from a consumer (the client's I/O "
                             "thread would wait for itself)");
        }
        return; /* still running: w stays */
    }
    /* no callback runs after sq_client_unwatch returns */
    if (w != NULL) {
        (*env)->DeleteGlobalRef(env, w->watch);
        free(w);
    }
}
